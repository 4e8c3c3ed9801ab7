// forker: a tree that changes under the dumper. It forks short-lived
// children in a tight loop and reaps each one; every fourth child lives
// for a few hundred microseconds, so a dump finds children being born,
// running, exiting and waiting to be reaped.
//
// usage: forker LOGFILE
//
// Every 32 children it appends "count N" to LOGFILE. A child that does
// not exit with status 7 logs "bad child STATUS"; a failed fork logs
// "fork failed ERRNO".
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int logfd;

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...) {
	char buf[128];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (write(logfd, buf, n) != n)
		_exit(3);
}

int main(int argc, char **argv) {
	if (argc < 2) {
		fprintf(stderr, "usage: forker LOGFILE\n");
		return 2;
	}
	logfd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (logfd < 0)
		return 1;
	logf_("ready %d\n", getpid());
	unsigned long n = 0, count = 0;
	for (;;) {
		pid_t c = fork();
		if (c == 0) {
			if (n % 4 == 0) {
				struct timespec ts = {0, 300 * 1000};
				while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
					;
			}
			_exit(7);
		}
		if (c < 0) {
			logf_("fork failed %d\n", errno);
			struct timespec ts = {0, 10 * 1000 * 1000};
			nanosleep(&ts, NULL);
			continue;
		}
		int st;
		while (waitpid(c, &st, 0) < 0) {
			if (errno != EINTR) {
				logf_("waitpid failed %d\n", errno);
				_exit(4);
			}
		}
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 7)
			logf_("bad child %#x\n", st);
		if (++n % 32 == 0)
			logf_("count %lu\n", ++count);
	}
}
