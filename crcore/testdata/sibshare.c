// sibshare: two siblings that share an fd table their parent does not.
//
// usage: sibshare LOGFILE
//
// The root forks A; A clones B with CLONE_PARENT | CLONE_FILES, so B is
// the root's child sharing A's fd table. All three log "ready" and wait.
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int b_main(void *arg) {
	(void)arg;
	for (;;)
		pause();
	return 0;
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int log = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (log < 0)
		return 1;
	pid_t a = fork();
	if (a == 0) {
		size_t sz = 64 << 10;
		char *st = malloc(sz);
		pid_t b = clone(b_main, st + sz, CLONE_PARENT | CLONE_FILES | SIGCHLD, NULL);
		if (b < 0)
			_exit(1);
		dprintf(log, "ready %d %d\n", getpid(), b);
		for (;;)
			pause();
	}
	for (;;)
		pause();
}
