// sockfork: a socketpair shared by a parent and its child, as a
// master/worker server has.
//
// usage: sockfork LOGFILE
//
// The parent sends "ping N" on its end, the child answers "pong N" on
// its own, every 20 ms; the parent logs each answer as "got pong N".
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int log = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	int sv[2];
	if (log < 0 || socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) < 0)
		return 1;
	char buf[64];
	if (fork() == 0) {
		close(sv[0]);
		for (;;) {
			ssize_t n = recv(sv[1], buf, sizeof buf - 1, 0);
			if (n <= 0)
				_exit(1);
			buf[n] = 0;
			unsigned long k;
			if (sscanf(buf, "ping %lu", &k) != 1)
				_exit(1);
			int m = snprintf(buf, sizeof buf, "pong %lu", k);
			if (send(sv[1], buf, m, 0) != m)
				_exit(1);
		}
	}
	close(sv[1]);
	for (unsigned long k = 1;; k++) {
		int m = snprintf(buf, sizeof buf, "ping %lu", k);
		if (send(sv[0], buf, m, 0) != m)
			return 1;
		ssize_t n = recv(sv[0], buf, sizeof buf - 1, 0);
		if (n <= 0) {
			dprintf(log, "lost %zd %d\n", n, errno);
			return 1;
		}
		buf[n] = 0;
		dprintf(log, "got %s\n", buf);
		struct timespec ts = {0, 20 * 1000 * 1000};
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
}
