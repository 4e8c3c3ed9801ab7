// shmrm: a SysV segment marked for removal while still attached.
//
// usage: shmrm LOGFILE
//
// Unshares its IPC namespace, sets its kernel.msgmnb to 23456, creates a
// private one-page segment,
// attaches it, writes "marked-1" in it and marks it for removal
// (IPC_RMID: it lives until its last detach). Logs "ready ID". On
// SIGUSR1 it logs "msgmnb N" (the namespace's), then "shm MODE TEXT": the
// segment's mode (octal; SHM_DEST is 01000) from IPC_STAT and the text at
// its start.
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
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
	int sc = open("/proc/sys/kernel/msgmnb", O_WRONLY);
	if (sc < 0 || write(sc, "23456", 5) != 5)
		return 1;
	close(sc);
	int id = shmget(IPC_PRIVATE, 4096, 0600 | IPC_CREAT);
	char *p = shmat(id, NULL, 0);
	if (id < 0 || p == (void *)-1)
		return 1;
	strcpy(p, "marked-1");
	if (shmctl(id, IPC_RMID, NULL) < 0)
		return 1;
	sigset_t block, old;
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	sigprocmask(SIG_BLOCK, &block, &old);
	struct sigaction sa = {.sa_handler = on_usr1};
	sigaction(SIGUSR1, &sa, NULL);
	dprintf(log, "ready %d\n", id);
	for (;;) {
		while (!go)
			sigsuspend(&old);
		go = 0;
		char mnb[32] = "?";
		int fd = open("/proc/sys/kernel/msgmnb", O_RDONLY);
		if (fd >= 0) {
			ssize_t n = read(fd, mnb, sizeof mnb - 1);
			mnb[n > 0 ? n : 0] = 0;
			close(fd);
			for (char *c = mnb; *c; c++)
				if (*c == '\n')
					*c = 0;
		}
		dprintf(log, "msgmnb %s\n", mnb);
		struct shmid_ds ds;
		if (shmctl(id, IPC_STAT, &ds) < 0)
			dprintf(log, "shm gone\n");
		else
			dprintf(log, "shm %o %s\n", ds.shm_perm.mode & 07777, p);
	}
}
