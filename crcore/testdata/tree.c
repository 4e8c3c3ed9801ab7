// tree: a process tree that counts, talks through pipes and shares files.
//
// usage: tree LOGFILE
//
// The root forks three children: A and B count and log through the log
// fd they inherited (one open file shared by the whole tree, O_APPEND);
// B forks a grandchild C that reads tokens from a pipe B writes to, and
// logs each one; A puts itself in a new process group, C in a new
// session. Every process logs "pid P ppid Q pgid G sid S" once at start
// and when it gets SIGUSR1, and "NAME count N" as it goes. A fourth child
// exits at once with status 7 and stays a zombie: the root never reaps.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int logfd;
static volatile sig_atomic_t want_ids;
static const char *name = "root";

static void on_usr1(int s) { (void)s; want_ids = 1; }

static void ids(void) {
	dprintf(logfd, "%s pid %d ppid %d pgid %d sid %d\n", name, getpid(), getppid(), getpgid(0), getsid(0));
}

static void nap(void) {
	struct timespec ts = {0, 20 * 1000 * 1000};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	if (want_ids) {
		want_ids = 0;
		ids();
	}
}

static void counter(void) {
	unsigned long n = 0;
	for (;;) {
		dprintf(logfd, "%s count %lu\n", name, ++n);
		nap();
	}
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	logfd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0600);
	if (logfd < 0)
		return 1;
	struct sigaction sa = {0};
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR1, &sa, NULL);

	if (fork() == 0) {
		name = "A";
		setpgid(0, 0);
		ids();
		counter();
	}
	if (fork() == 0) {
		name = "B";
		int p[2];
		if (pipe(p) < 0)
			_exit(1);
		if (fork() == 0) {
			name = "C";
			close(p[1]);
			setsid();
			ids();
			char buf[64];
			for (;;) {
				ssize_t k = read(p[0], buf, sizeof buf - 1);
				if (k <= 0) {
					dprintf(logfd, "C read %zd errno %d\n", k, errno);
					_exit(1);
				}
				buf[k] = 0;
				dprintf(logfd, "C got %s\n", buf);
				if (want_ids) {
					want_ids = 0;
					ids();
				}
			}
		}
		close(p[0]);
		ids();
		unsigned long n = 0;
		for (;;) {
			char tok[32];
			int k = snprintf(tok, sizeof tok, "t%lu", ++n);
			if (write(p[1], tok, k) != k)
				_exit(1);
			dprintf(logfd, "B count %lu\n", n);
			nap();
		}
	}
	if (fork() == 0)
		_exit(7);
	ids();
	counter();
}
