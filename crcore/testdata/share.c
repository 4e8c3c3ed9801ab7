// share: ten processes holding a thousand fds of shared open files.
//
// usage: share LOGFILE DATAFILE
//
// The root opens DATAFILE once and dups it to fds 100..199, opens it a
// second time (another open file of the same inode) at fd 50, and makes a
// pipe; then forks nine children. Every process thus holds the same 100
// fds of one open file. Each child also opens DATAFILE on its own at fd
// 60 and dups fd 50 of its parent's second open file at 61. All log
// "ready" and sleep; on SIGUSR1 each writes "P" through fd 100 (a shared
// offset: the data file grows by ten bytes) and logs "wrote".
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }

int main(int argc, char **argv) {
	if (argc < 3)
		return 2;
	int log = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0600);
	int f = open(argv[2], O_RDWR | O_CREAT, 0600);
	if (log < 0 || f < 0)
		return 1;
	for (int fd = 100; fd < 200; fd++)
		dup2(f, fd);
	close(f);
	int g = open(argv[2], O_RDONLY);
	dup2(g, 50);
	close(g);
	int p[2];
	if (pipe(p) < 0)
		return 1;
	// SIGUSR1 is blocked but inside sigsuspend, so that one sent at any
	// moment (even right after a restore) is never lost.
	signal(SIGUSR1, on_usr1);
	sigset_t blk, old;
	sigemptyset(&blk);
	sigaddset(&blk, SIGUSR1);
	sigprocmask(SIG_BLOCK, &blk, &old);
	for (int i = 0; i < 9; i++) {
		if (fork() == 0) {
			int h = open(argv[2], O_RDONLY);
			dup2(h, 60);
			close(h);
			dup2(50, 61);
			break;
		}
	}
	dprintf(log, "ready %d\n", getpid());
	for (;;) {
		sigsuspend(&old);
		if (go) {
			go = 0;
			if (write(100, "P", 1) != 1)
				return 1;
			dprintf(log, "wrote %d\n", getpid());
		}
	}
}
