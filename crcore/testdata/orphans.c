// orphans: sessions and process groups whose leaders have exited.
//
// usage: orphans LOGFILE [alive-leader]
//
// The root starts a session of its own and becomes a child subreaper.
// It forks A, which starts a session, makes a pipe and forks B (B leads
// a process group of its own) and C (C stays in A's group); A exits, and
// B and C, orphans, are reparented to the root, in session A. B writes
// tokens into the pipe, C reads and logs them. The root also forks D,
// which leads a group of its own in the root's session and forks E
// (E stays in D's group); D exits, and E, an orphan in group D, counts.
// The root reaps A and D, logs "ready" and waits in sigsuspend; it logs
// "root sigchld" for each SIGCHLD it gets (none after a restore).
//
// alive-leader: a shape crhook refuses to restore. The root forks X, X
// forks L, which starts a session and forks K, which forks M and exits:
// M, an orphan of the root, is in session L, whose leader lives on
// elsewhere in the tree. Logs "M started PID" and "ready".
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int logfd;

static void on_chld(int sig) {
	(void)sig;
	static const char msg[] = "root sigchld\n";
	if (write(logfd, msg, sizeof msg - 1) < 0)
		_exit(3);
}

static void nap(void) {
	struct timespec ts = {0, 20 * 1000 * 1000};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	logfd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (logfd < 0)
		return 1;
	if (setsid() < 0 || prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) {
		dprintf(logfd, "root setup errno %d\n", errno);
		return 1;
	}
	struct sigaction sa = {.sa_handler = on_chld, .sa_flags = SA_RESTART};
	sigaction(SIGCHLD, &sa, NULL);
	if (argc > 2 && !strcmp(argv[2], "alive-leader")) {
		if (fork() == 0) { // X
			if (fork() == 0) { // L
				setsid();
				pid_t k = fork();
				if (k == 0) {
					if (fork() == 0) { // M
						dprintf(logfd, "M started %d\n", getpid());
						for (;;)
							nap();
					}
					_exit(0);
				}
				waitpid(k, NULL, 0);
				dprintf(logfd, "ready\n");
				for (;;)
					nap();
			}
			for (;;)
				nap();
		}
		for (;;)
			nap();
	}
	pid_t a = fork();
	if (a == 0) {
		signal(SIGCHLD, SIG_DFL);
		setsid();
		int p[2];
		if (pipe(p) < 0)
			_exit(1);
		pid_t b = fork();
		if (b == 0) {
			setpgid(0, 0);
			close(p[0]);
			dprintf(logfd, "B started %d\n", getpid());
			for (unsigned long n = 1;; n++) {
				char tok[32];
				int k = snprintf(tok, sizeof tok, "t%lu", n);
				if (write(p[1], tok, k) != k)
					_exit(1);
				nap();
			}
		}
		setpgid(b, b);
		if (fork() == 0) {
			close(p[1]);
			dprintf(logfd, "C started %d\n", getpid());
			char buf[64];
			for (;;) {
				ssize_t k = read(p[0], buf, sizeof buf - 1);
				if (k <= 0) {
					dprintf(logfd, "C read %zd errno %d\n", k, errno);
					_exit(1);
				}
				buf[k] = 0;
				dprintf(logfd, "C got %s\n", buf);
			}
		}
		_exit(0);
	}
	pid_t d = fork();
	if (d == 0) {
		setpgid(0, 0);
		signal(SIGCHLD, SIG_DFL);
		if (fork() == 0) {
			dprintf(logfd, "E started %d\n", getpid());
			for (unsigned long n = 1;; n++) {
				dprintf(logfd, "E count %lu\n", n);
				nap();
			}
		}
		_exit(0);
	}
	int st;
	if (waitpid(a, &st, 0) != a || waitpid(d, &st, 0) != d) {
		dprintf(logfd, "root waitpid errno %d\n", errno);
		return 1;
	}
	dprintf(logfd, "root %d A %d D %d\n", getpid(), a, d);
	dprintf(logfd, "ready\n");
	sigset_t none;
	sigemptyset(&none);
	for (;;)
		sigsuspend(&none);
}
