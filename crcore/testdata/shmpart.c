// shmpart: a SysV segment of which only the middle stays attached.
//
// usage: shmpart LOGFILE
//
// Unshares its IPC namespace, creates a 4-page segment, attaches it,
// writes "page-N" at the start of each page N, then unmaps the first and
// the last page: pages 1 and 2 stay, at offset 4096 of the segment. Logs
// "ready ADDR" (hex, the address of page 1). On SIGUSR1 it logs
// "part TEXT1 TEXT2" from the two pages it still has.
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <unistd.h>

static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int log = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (log < 0 || unshare(CLONE_NEWIPC) < 0)
		return 1;
	long pg = sysconf(_SC_PAGESIZE);
	int id = shmget(IPC_PRIVATE, 4 * pg, 0600 | IPC_CREAT);
	char *p = shmat(id, NULL, 0);
	if (id < 0 || p == (void *)-1)
		return 1;
	for (int i = 0; i < 4; i++)
		sprintf(p + i * pg, "page-%d", i);
	if (munmap(p, pg) < 0 || munmap(p + 3 * pg, pg) < 0)
		return 1;
	char *part = p + pg;
	sigset_t block, old;
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	sigprocmask(SIG_BLOCK, &block, &old);
	struct sigaction sa = {.sa_handler = on_usr1};
	sigaction(SIGUSR1, &sa, NULL);
	dprintf(log, "ready %lx\n", (unsigned long)part);
	for (;;) {
		while (!go)
			sigsuspend(&old);
		go = 0;
		dprintf(log, "part %s %s\n", part, part + pg);
	}
}
