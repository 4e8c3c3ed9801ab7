// sharevm: a child that shares its parent's address space, which crhook
// refuses to dump.
//
// usage: sharevm LOGFILE clonevm|vfork
//
// clonevm: the parent clones a child with CLONE_VM (no CLONE_THREAD) on
// a stack of its own; vfork: the parent vforks, and the child, which
// never execs, keeps the parent suspended in vfork. The child logs
// "child PID" and "count N" as it goes (raw syscalls only: it runs on
// the parent's memory); the parent of clonevm waits in sigsuspend.
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int logfd;

static void say(const char *what, long n) {
	char buf[64];
	int k = snprintf(buf, sizeof buf, "%s %ld\n", what, n);
	syscall(SYS_write, logfd, buf, k);
}

static int child(void *arg) {
	(void)arg;
	say("child", syscall(SYS_getpid));
	for (long n = 1;; n++) {
		say("count", n);
		struct timespec ts = {0, 20 * 1000 * 1000};
		syscall(SYS_nanosleep, &ts, NULL);
	}
	return 0;
}

int main(int argc, char **argv) {
	if (argc < 3)
		return 2;
	logfd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (logfd < 0)
		return 1;
	if (!strcmp(argv[2], "vfork")) {
		if (vfork() == 0)
			child(NULL);
		return 1;
	}
	size_t sz = 256 << 10;
	char *stack = malloc(sz);
	if (!stack || clone(child, stack + sz, CLONE_VM | SIGCHLD, NULL) < 0)
		return 1;
	sigset_t none;
	sigemptyset(&none);
	for (;;)
		sigsuspend(&none);
}
