// inet: holds TCP and UDP sockets, bound and listening, IPv4 and IPv6,
// loopback and wildcard, then waits; on SIGUSR1 serves one client on
// each.
//
// usage: inet LOGFILE
//
// It sets up
//   tcp4   TCP listener on 127.0.0.1 (kernel-chosen port), backlog 7,
//          SO_REUSEADDR, TCP_NODELAY
//   tcp6   TCP listener on ::1, IPV6_V6ONLY, SO_REUSEPORT
//   any6   TCP listener on [::] accepting IPv4 too (IPV6_V6ONLY off),
//          O_NONBLOCK
//   udp4   UDP socket bound to 127.0.0.1, SO_RCVBUF 300000
//   udpc   UDP socket bound to 127.0.0.1 and connected to udp4
//   fresh  a TCP socket neither bound nor connected
// and logs "ports tcp4=P tcp6=P any6=P udp4=P udpc=P", "opts ...", "ready".
//
// SIGUSR1: logs "opts ..." again; sends "c" from udpc; then for up to 5 s
// serves: on each listener, accepts one connection, reads up to 64
// bytes, answers "hi NAME " and them, logs "served NAME DATA"; on udp4,
// answers each datagram with "hi udp4 " and it, logs "served udp4 DATA";
// then "done". Errors are logged as "err WHAT ERRNO".
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t want_serve;
static int logfd;

static void on_usr1(int s) { (void)s; want_serve = 1; }

static int must(int r, const char *what) {
	if (r < 0) {
		dprintf(logfd, "err %s %d\n", what, errno);
		exit(1);
	}
	return r;
}

static int opt(int fd, int level, int o) {
	int v = -1;
	socklen_t l = sizeof v;
	getsockopt(fd, level, o, &v, &l);
	return v;
}

static int port(int fd) {
	struct sockaddr_in6 a;
	socklen_t l = sizeof a;
	must(getsockname(fd, (struct sockaddr *)&a, &l), "getsockname");
	return ntohs(a.sin6_port); // sin_port is at the same offset
}

static int tcp4, tcp6, any6, udp4, udpc;

static void log_opts(void) {
	dprintf(logfd, "opts tcp4.reuseaddr=%d tcp4.nodelay=%d tcp6.nodelay=%d tcp6.v6only=%d tcp6.reuseport=%d any6.v6only=%d any6.nonblock=%d udp4.rcvbuf=%d\n",
		opt(tcp4, SOL_SOCKET, SO_REUSEADDR), opt(tcp4, IPPROTO_TCP, TCP_NODELAY),
		opt(tcp6, IPPROTO_TCP, TCP_NODELAY), opt(tcp6, IPPROTO_IPV6, IPV6_V6ONLY),
		opt(tcp6, SOL_SOCKET, SO_REUSEPORT), opt(any6, IPPROTO_IPV6, IPV6_V6ONLY),
		(fcntl(any6, F_GETFL) & O_NONBLOCK) != 0, opt(udp4, SOL_SOCKET, SO_RCVBUF));
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	logfd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (logfd < 0)
		return 1;
	int one = 1, zero = 0;
	struct sockaddr_in a4 = {.sin_family = AF_INET};
	a4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	struct sockaddr_in6 any = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_ANY_INIT};

	tcp4 = must(socket(AF_INET, SOCK_STREAM, 0), "socket tcp4");
	must(setsockopt(tcp4, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one), "reuseaddr");
	must(setsockopt(tcp4, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one), "nodelay");
	must(bind(tcp4, (struct sockaddr *)&a4, sizeof a4), "bind tcp4");
	must(listen(tcp4, 7), "listen tcp4");

	tcp6 = must(socket(AF_INET6, SOCK_STREAM, 0), "socket tcp6");
	must(setsockopt(tcp6, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one), "v6only");
	must(setsockopt(tcp6, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one), "reuseport");
	must(bind(tcp6, (struct sockaddr *)&a6, sizeof a6), "bind tcp6");
	must(listen(tcp6, 4), "listen tcp6");

	any6 = must(socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK, 0), "socket any6");
	must(setsockopt(any6, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero), "v6only");
	must(bind(any6, (struct sockaddr *)&any, sizeof any), "bind any6");
	must(listen(any6, 3), "listen any6");

	udp4 = must(socket(AF_INET, SOCK_DGRAM, 0), "socket udp4");
	int rb = 150000;
	must(setsockopt(udp4, SOL_SOCKET, SO_RCVBUF, &rb, sizeof rb), "rcvbuf");
	must(bind(udp4, (struct sockaddr *)&a4, sizeof a4), "bind udp4");
	struct sockaddr_in u4 = a4;
	u4.sin_port = htons(port(udp4));

	udpc = must(socket(AF_INET, SOCK_DGRAM, 0), "socket udpc");
	must(bind(udpc, (struct sockaddr *)&a4, sizeof a4), "bind udpc");
	must(connect(udpc, (struct sockaddr *)&u4, sizeof u4), "connect udpc");

	int fresh = must(socket(AF_INET, SOCK_STREAM, 0), "socket fresh");
	(void)fresh;

	struct sigaction sa = {0};
	sa.sa_flags = SA_RESTART;
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	dprintf(logfd, "ports tcp4=%d tcp6=%d any6=%d udp4=%d udpc=%d\n", port(tcp4), port(tcp6), port(any6), port(udp4), port(udpc));
	log_opts();
	dprintf(logfd, "ready\n");

	struct timespec ts = {0, 5 * 1000 * 1000};
	while (!want_serve)
		nanosleep(&ts, NULL);
	log_opts();
	must(send(udpc, "c", 1, 0), "send udpc");

	struct pollfd pfd[4] = {{tcp4, POLLIN, 0}, {tcp6, POLLIN, 0}, {any6, POLLIN, 0}, {udp4, POLLIN, 0}};
	const char *names[4] = {"tcp4", "tcp6", "any6", "udp4"};
	int served = 0, udp_served = 0;
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	while (served < 3 || udp_served < 2) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - start.tv_sec > 5)
			break;
		if (poll(pfd, 4, 100) <= 0)
			continue;
		char buf[65], out[160];
		for (int i = 0; i < 4; i++) {
			if (!(pfd[i].revents & POLLIN))
				continue;
			if (i == 3) {
				struct sockaddr_storage from;
				socklen_t fl = sizeof from;
				int n = recvfrom(udp4, buf, 64, 0, (struct sockaddr *)&from, &fl);
				if (n < 0)
					continue;
				buf[n] = 0;
				int m = snprintf(out, sizeof out, "hi udp4 %s", buf);
				sendto(udp4, out, m, 0, (struct sockaddr *)&from, fl);
				dprintf(logfd, "served udp4 %s\n", buf);
				udp_served++;
				continue;
			}
			int c = accept4(pfd[i].fd, NULL, NULL, SOCK_CLOEXEC);
			if (c < 0)
				continue;
			int n = recv(c, buf, 64, 0);
			if (n < 0)
				n = 0;
			buf[n] = 0;
			int m = snprintf(out, sizeof out, "hi %s %s", names[i], buf);
			send(c, out, m, MSG_NOSIGNAL);
			close(c);
			dprintf(logfd, "served %s %s\n", names[i], buf);
			pfd[i].fd = -1;
			served++;
		}
	}
	dprintf(logfd, "done\n");
	for (;;)
		nanosleep(&ts, NULL);
}
