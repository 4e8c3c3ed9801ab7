// unix: holds unix sockets of every supported shape, with data queued,
// then waits; on SIGUSR1 checks that they still hold what they held.
//
// usage: unix LOGFILE DIR
//
// It sets up
//   sp[0] <-> sp[1]  stream socketpair; "s1-hello" queued on sp[0],
//                    "s0-world!" on sp[1]; SO_PASSCRED on sp[0];
//                    SO_SNDBUF 100000 on sp[1]; sp[1] moved to fd 1500
//   dp[0] <-> dp[1]  datagram socketpair; "d1" "d22" "d333" queued on
//                    dp[0], "back" on dp[1]; dp[0] O_NONBLOCK
//   qp[0] <-> qp[1]  seqpacket socketpair; "q1" "q22" queued on qp[0];
//                    qp[1] shut down for writing
//   lis              stream listener at DIR/listen.sock, backlog 5,
//                    O_NONBLOCK
//   dg               datagram socket bound to DIR/dgram.sock, holding
//                    "u1" and "u22" sent from a socket since closed, and
//                    "c1" from cl
//   cl               datagram socket connected to dg (one way), at a
//                    lower fd than dg
//   abs              seqpacket listener on the abstract name
//                    "crhook-test-PID", backlog 3
// and logs "fds NAME=N ...", "sndbuf N", "ready".
//
// SIGUSR1: reads every queue and logs "got NAME DATA|DATA|..." per socket
// (each datagram between bars), sends "ping" both ways on sp and logs
// "pair ok", logs "sndbuf N" and "passcred N", accepts one connection
// on lis (waiting up to 5 s), reads up to 64 bytes, answers "hi " and
// them, logs "accepted DATA"; logs "abs NAME" from getsockname; sends
// "c2" from cl and logs "oneway DATA" as dg receives it; "done".
// Errors are logged as "err WHAT ERRNO".
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t want_check;
static int logfd;

static void on_usr1(int s) { (void)s; want_check = 1; }

static int must(int r, const char *what) {
	if (r < 0) {
		dprintf(logfd, "err %s %d\n", what, errno);
		exit(1);
	}
	return r;
}

static socklen_t path_addr(struct sockaddr_un *a, const char *dir, const char *name) {
	memset(a, 0, sizeof *a);
	a->sun_family = AF_UNIX;
	snprintf(a->sun_path, sizeof a->sun_path, "%s/%s", dir, name);
	return sizeof *a;
}

static void sendstr(int fd, const char *s) { must(send(fd, s, strlen(s), 0), s); }

// drain logs every message queued on fd, without waiting.
static void drain(const char *name, int fd) {
	char buf[256], line[2048];
	int n, off = snprintf(line, sizeof line, "got %s ", name);
	int first = 1;
	for (;;) {
		n = recv(fd, buf, sizeof buf - 1, MSG_DONTWAIT);
		if (n < 0 && errno == EAGAIN)
			break;
		if (n < 0) {
			dprintf(logfd, "err recv-%s %d\n", name, errno);
			return;
		}
		if (n == 0) {
			off += snprintf(line + off, sizeof line - off, "%sEOF", first ? "" : "|");
			break;
		}
		buf[n] = 0;
		off += snprintf(line + off, sizeof line - off, "%s%s", first ? "" : "|", buf);
		first = 0;
	}
	dprintf(logfd, "%s\n", line);
}

int main(int argc, char **argv) {
	if (argc < 3)
		return 2;
	logfd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (logfd < 0)
		return 1;
	const char *dir = argv[2];
	int one = 1;

	int sp[2], dp[2], qp[2];
	must(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), "socketpair stream");
	must(socketpair(AF_UNIX, SOCK_DGRAM, 0, dp), "socketpair dgram");
	must(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, qp), "socketpair seqpacket");
	must(dup2(sp[1], 1500), "dup2");
	close(sp[1]);
	sp[1] = 1500;
	must(setsockopt(sp[0], SOL_SOCKET, SO_PASSCRED, &one, sizeof one), "passcred");
	int sb = 100000;
	must(setsockopt(sp[1], SOL_SOCKET, SO_SNDBUF, &sb, sizeof sb), "sndbuf");
	sendstr(sp[1], "s1-hello");
	sendstr(sp[0], "s0-world!");
	sendstr(dp[1], "d1");
	sendstr(dp[1], "d22");
	sendstr(dp[1], "d333");
	sendstr(dp[0], "back");
	must(fcntl(dp[0], F_SETFL, O_NONBLOCK), "nonblock");
	sendstr(qp[1], "q1");
	sendstr(qp[1], "q22");
	must(shutdown(qp[1], SHUT_WR), "shutdown");

	struct sockaddr_un a;
	socklen_t al;
	int cl = must(socket(AF_UNIX, SOCK_DGRAM, 0), "socket cl");
	int lis = must(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0), "socket lis");
	al = path_addr(&a, dir, "listen.sock");
	must(bind(lis, (struct sockaddr *)&a, al), "bind lis");
	must(listen(lis, 5), "listen");

	int dg = must(socket(AF_UNIX, SOCK_DGRAM, 0), "socket dg");
	al = path_addr(&a, dir, "dgram.sock");
	must(bind(dg, (struct sockaddr *)&a, al), "bind dg");
	int tmp = must(socket(AF_UNIX, SOCK_DGRAM, 0), "socket tmp");
	must(sendto(tmp, "u1", 2, 0, (struct sockaddr *)&a, al), "sendto u1");
	must(sendto(tmp, "u22", 3, 0, (struct sockaddr *)&a, al), "sendto u22");
	close(tmp);
	must(connect(cl, (struct sockaddr *)&a, al), "connect cl");
	sendstr(cl, "c1");

	int abs = must(socket(AF_UNIX, SOCK_SEQPACKET, 0), "socket abs");
	memset(&a, 0, sizeof a);
	a.sun_family = AF_UNIX;
	int nl = snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "crhook-test-%d", getpid());
	must(bind(abs, (struct sockaddr *)&a, offsetof(struct sockaddr_un, sun_path) + 1 + nl), "bind abs");
	must(listen(abs, 3), "listen abs");

	struct sigaction sa = {0};
	sa.sa_flags = SA_RESTART;
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);

	socklen_t ol = sizeof sb;
	must(getsockopt(sp[1], SOL_SOCKET, SO_SNDBUF, &sb, &ol), "getsockopt");
	dprintf(logfd, "fds sp0=%d sp1=%d dp0=%d dp1=%d qp0=%d qp1=%d lis=%d dg=%d abs=%d cl=%d\n",
		sp[0], sp[1], dp[0], dp[1], qp[0], qp[1], lis, dg, abs, cl);
	dprintf(logfd, "sndbuf %d\n", sb);
	dprintf(logfd, "ready\n");

	struct timespec ts = {0, 5 * 1000 * 1000};
	while (!want_check)
		nanosleep(&ts, NULL);

	drain("sp0", sp[0]);
	drain("sp1", sp[1]);
	drain("dp0", dp[0]);
	drain("dp1", dp[1]);
	drain("qp0", qp[0]);
	drain("dg", dg);
	sendstr(sp[0], "ping0");
	sendstr(sp[1], "ping1");
	char buf[128];
	int n1 = recv(sp[1], buf, sizeof buf, 0), n0 = recv(sp[0], buf + 64, 64, 0);
	if (n1 == 5 && n0 == 5 && !memcmp(buf, "ping0", 5) && !memcmp(buf + 64, "ping1", 5))
		dprintf(logfd, "pair ok\n");
	else
		dprintf(logfd, "err pair %d %d\n", n1, n0);
	ol = sizeof sb;
	must(getsockopt(sp[1], SOL_SOCKET, SO_SNDBUF, &sb, &ol), "getsockopt");
	dprintf(logfd, "sndbuf %d\n", sb);
	int pc = 0;
	ol = sizeof pc;
	must(getsockopt(sp[0], SOL_SOCKET, SO_PASSCRED, &pc, &ol), "getsockopt");
	dprintf(logfd, "passcred %d\n", pc);

	int c = -1;
	for (int i = 0; i < 1000 && c < 0; i++) {
		c = accept4(lis, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0 && errno != EAGAIN) {
			dprintf(logfd, "err accept %d\n", errno);
			break;
		}
		if (c < 0)
			nanosleep(&ts, NULL);
	}
	if (c >= 0) {
		int n = recv(c, buf, 64, 0);
		if (n < 0)
			n = 0;
		buf[n] = 0;
		char out[160];
		snprintf(out, sizeof out, "hi %s", buf);
		sendstr(c, out);
		dprintf(logfd, "accepted %s\n", buf);
		close(c);
	}
	al = sizeof a;
	memset(&a, 0, sizeof a);
	must(getsockname(abs, (struct sockaddr *)&a, &al), "getsockname");
	dprintf(logfd, "abs %s\n", a.sun_path + 1);
	sendstr(cl, "c2");
	int n = recv(dg, buf, sizeof buf - 1, MSG_DONTWAIT);
	if (n >= 0) {
		buf[n] = 0;
		dprintf(logfd, "oneway %s\n", buf);
	} else
		dprintf(logfd, "err oneway %d\n", errno);
	dprintf(logfd, "done\n");
	for (;;)
		nanosleep(&ts, NULL);
}
