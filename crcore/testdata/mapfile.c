// mapfile: shared and private mappings of a file.
//
// usage: mapfile LOGFILE DATAFILE
//
// DATAFILE (16 KiB, made by the test) is mapped MAP_SHARED read-write and
// MAP_PRIVATE read-write. The program writes "shared-1" at offset 0 of
// the shared mapping and "private-1" at offset 4096 of the private one,
// logs "ready", and waits. On SIGUSR1 it writes "shared-2" at offset 8192
// of the shared mapping and logs what both mappings hold at those
// offsets: "private <text at 4096 in the private mapping> shared <text at
// 0 in the shared mapping>".
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }

int main(int argc, char **argv) {
	if (argc < 3)
		return 2;
	int log = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	int f = open(argv[2], O_RDWR | O_CLOEXEC);
	if (log < 0 || f < 0)
		return 1;
	char *sh = mmap(NULL, 16384, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
	char *pr = mmap(NULL, 16384, PROT_READ | PROT_WRITE, MAP_PRIVATE, f, 0);
	close(f);
	if (sh == MAP_FAILED || pr == MAP_FAILED)
		return 1;
	strcpy(sh, "shared-1");
	strcpy(pr + 4096, "private-1");
	// SIGUSR1 is blocked but inside sigsuspend, so that one sent at any
	// moment (even right after a restore) is never lost.
	signal(SIGUSR1, on_usr1);
	sigset_t blk, old;
	sigemptyset(&blk);
	sigaddset(&blk, SIGUSR1);
	sigprocmask(SIG_BLOCK, &blk, &old);
	dprintf(log, "ready\n");
	for (;;) {
		sigsuspend(&old);
		if (go) {
			go = 0;
			strcpy(sh + 8192, "shared-2");
			dprintf(log, "private %s shared %s\n", pr + 4096, sh);
		}
	}
}
