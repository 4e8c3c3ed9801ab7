// eventfd: holds eventfds (a counter above 32 bits, a semaphore, an
// empty one); after SIGUSR1 reads them.
//
// usage: eventfd LOGFILE
#include "fdtest.h"
#include <poll.h>
#include <stdint.h>
#include <sys/eventfd.h>

static const char *const keys[] = {"eventfd-count", "eventfd-semaphore", NULL};

static void report(const char *tag, int e1, int e2, int e3) {
	int fds[] = {e1, e2, e3};
	for (int i = 0; i < 3; i++) {
		fd_flags(tag, fds[i]);
		fdinfo_lines(tag, fds[i], keys);
	}
}

int main(int argc, char **argv) {
	fdtest_init(argc, argv);
	int e1 = eventfd(7, EFD_NONBLOCK);
	int e2 = eventfd(3, EFD_SEMAPHORE | EFD_CLOEXEC);
	int e3 = eventfd(0, EFD_NONBLOCK);
	if (e1 < 0 || e2 < 0 || e3 < 0)
		die("eventfd");
	if (eventfd_write(e1, 0x100000000ULL) < 0)
		die("eventfd_write");
	report("before", e1, e2, e3);
	logf_("ready");
	wait_go();
	report("after", e1, e2, e3);
	eventfd_t v;
	if (eventfd_read(e1, &v) < 0)
		die("read e1");
	logf_("e1 %#llx", (unsigned long long)v);
	for (int i = 0; i < 3; i++) {
		if (eventfd_read(e2, &v) < 0)
			die("read e2");
		logf_("e2 %llu", (unsigned long long)v);
	}
	struct pollfd pf = {.fd = e2, .events = POLLIN};
	logf_("e2 ready after 3 reads: %d", poll(&pf, 1, 0));
	int r = eventfd_read(e3, &v);
	logf_("e3 %d errno %d", r, r < 0 ? errno : 0);
	logf_("done");
	return 0;
}
