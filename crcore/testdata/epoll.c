// epoll: an epoll (at a lower fd than its targets) watching two
// eventfds and both ends of a pipe; after SIGUSR1 logs what is ready, then
// makes the idle eventfd ready.
//
// usage: epoll LOGFILE
#include "fdtest.h"
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

static const char *const keys[] = {"tfd:", NULL};

static int cmp(const void *a, const void *b) {
	uint64_t x = ((const struct epoll_event *)a)->data.u64, y = ((const struct epoll_event *)b)->data.u64;
	return x < y ? -1 : x > y;
}

static void wait_log(int ep, const char *tag) {
	struct epoll_event ev[8];
	int n = epoll_wait(ep, ev, 8, 1000);
	if (n < 0)
		die("epoll_wait");
	qsort(ev, n, sizeof ev[0], cmp);
	for (int i = 0; i < n; i++)
		logf_("%s data=%llx events=%x", tag, (unsigned long long)ev[i].data.u64, ev[i].events);
}

static void report(const char *tag, int ep) {
	char buf[8192], path[64];
	snprintf(path, sizeof path, "/proc/self/fdinfo/%d", ep);
	int f = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = read(f, buf, sizeof buf - 1);
	close(f);
	if (n < 0)
		die("read fdinfo");
	buf[n] = 0;
	fd_flags(tag, ep);
	// tfd, events and data; pos, ino and sdev name the new files.
	for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n")) {
		int tfd;
		unsigned ev;
		unsigned long long data;
		if (sscanf(l, "tfd: %d events: %x data: %llx", &tfd, &ev, &data) == 3)
			logf_("%s tfd %d events %x data %llx", tag, tfd, ev, data);
	}
	(void)keys;
}

int main(int argc, char **argv) {
	fdtest_init(argc, argv);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	int e1 = eventfd(3, 0), e2 = eventfd(0, 0);
	int p[2];
	if (ep < 0 || e1 < 0 || e2 < 0 || pipe(p) < 0 || write(p[1], "x", 1) != 1)
		die("setup");
	struct epoll_event ev;
	ev = (struct epoll_event){.events = EPOLLIN, .data.u64 = 0x1122334455667788ULL};
	epoll_ctl(ep, EPOLL_CTL_ADD, e1, &ev);
	ev = (struct epoll_event){.events = EPOLLIN, .data.u64 = 42};
	epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev);
	ev = (struct epoll_event){.events = EPOLLOUT, .data.u64 = 43};
	epoll_ctl(ep, EPOLL_CTL_ADD, p[1], &ev);
	ev = (struct epoll_event){.events = EPOLLIN | EPOLLET, .data.u64 = 44};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, e2, &ev) < 0)
		die("epoll_ctl");
	logf_("fds ep=%d e1=%d e2=%d p=%d,%d", ep, e1, e2, p[0], p[1]);
	report("before", ep);
	logf_("ready");
	wait_go();
	report("after", ep);
	wait_log(ep, "ev1");
	eventfd_write(e2, 1);
	wait_log(ep, "ev2");
	logf_("done");
	return 0;
}
