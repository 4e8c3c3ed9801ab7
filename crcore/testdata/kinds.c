// kinds: holds one open file of a kind crhook cannot dump, and counts.
//
// usage: kinds LOGFILE KIND [ARG]
//
// KIND is one of io_uring, perf, bpf, pidfd, netlink, packet, tcp (an
// established loopback connection to itself), unix-outside (a stream
// socket connected to the listener at path ARG), scm-rights (a
// socketpair with an fd queued in SCM_RIGHTS). The program opens it,
// logs "fd N", then "count N" every 10 ms.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/io_uring.h>
#include <linux/perf_event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int logfd;

static int must(int r, const char *what) {
	if (r < 0) {
		dprintf(logfd, "err %s %d\n", what, errno);
		exit(1);
	}
	return r;
}

int main(int argc, char **argv) {
	if (argc < 3)
		return 2;
	logfd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (logfd < 0)
		return 1;
	const char *k = argv[2];
	int fd = -1;
	if (!strcmp(k, "io_uring")) {
		struct io_uring_params p;
		memset(&p, 0, sizeof p);
		fd = must(syscall(SYS_io_uring_setup, 4, &p), k);
	} else if (!strcmp(k, "perf")) {
		struct perf_event_attr a;
		memset(&a, 0, sizeof a);
		a.size = sizeof a;
		a.type = PERF_TYPE_SOFTWARE;
		a.config = PERF_COUNT_SW_TASK_CLOCK;
		a.exclude_kernel = 1;
		fd = must(syscall(SYS_perf_event_open, &a, 0, -1, -1, PERF_FLAG_FD_CLOEXEC), k);
	} else if (!strcmp(k, "bpf")) {
		union bpf_attr a;
		memset(&a, 0, sizeof a);
		a.map_type = BPF_MAP_TYPE_ARRAY;
		a.key_size = 4;
		a.value_size = 4;
		a.max_entries = 1;
		fd = must(syscall(SYS_bpf, BPF_MAP_CREATE, &a, sizeof a), k);
	} else if (!strcmp(k, "pidfd")) {
		fd = must(syscall(SYS_pidfd_open, getpid(), 0), k);
	} else if (!strcmp(k, "netlink")) {
		fd = must(socket(AF_NETLINK, SOCK_RAW, 0), k);
	} else if (!strcmp(k, "packet")) {
		fd = must(socket(AF_PACKET, SOCK_RAW, 0), k);
	} else if (!strcmp(k, "tcp")) {
		struct sockaddr_in a = {.sin_family = AF_INET};
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		socklen_t l = sizeof a;
		int lis = must(socket(AF_INET, SOCK_STREAM, 0), "socket");
		must(bind(lis, (struct sockaddr *)&a, l), "bind");
		must(listen(lis, 1), "listen");
		must(getsockname(lis, (struct sockaddr *)&a, &l), "getsockname");
		fd = must(socket(AF_INET, SOCK_STREAM, 0), "socket");
		must(connect(fd, (struct sockaddr *)&a, l), "connect");
		must(accept(lis, NULL, NULL), "accept");
	} else if (!strcmp(k, "unix-outside") && argc > 3) {
		struct sockaddr_un a = {.sun_family = AF_UNIX};
		snprintf(a.sun_path, sizeof a.sun_path, "%s", argv[3]);
		fd = must(socket(AF_UNIX, SOCK_STREAM, 0), "socket");
		must(connect(fd, (struct sockaddr *)&a, sizeof a), "connect");
	} else if (!strcmp(k, "scm-rights")) {
		int sp[2];
		must(socketpair(AF_UNIX, SOCK_DGRAM, 0, sp), "socketpair");
		char cbuf[CMSG_SPACE(sizeof(int))];
		memset(cbuf, 0, sizeof cbuf);
		char b = 'x';
		struct iovec iov = {&b, 1};
		struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &logfd, sizeof(int));
		must(sendmsg(sp[1], &m, 0), "sendmsg");
		fd = sp[0];
	} else {
		return 2;
	}
	dprintf(logfd, "fd %d\n", fd);
	struct timespec ts = {0, 10 * 1000 * 1000};
	for (unsigned long n = 1;; n++) {
		dprintf(logfd, "count %lu\n", n);
		nanosleep(&ts, NULL);
	}
}
