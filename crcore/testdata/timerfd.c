// timerfd: a periodic timer (2.5 s, then every 700 ms), a one-shot timer
// that expired unread, and an absolute realtime one a minute away; after
// SIGUSR1 reads the expired one and waits for two expirations of the
// periodic one.
//
// usage: timerfd LOGFILE
#include "fdtest.h"
#include <stdint.h>
#include <sys/timerfd.h>
#include <time.h>

static const char *const keys[] = {"clockid", "settime flags", "it_interval", NULL};

static long long now_ms(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static void report(const char *tag, const int *fds) {
	for (int i = 0; i < 3; i++) {
		fd_flags(tag, fds[i]);
		fdinfo_lines(tag, fds[i], keys);
	}
}

int main(int argc, char **argv) {
	fdtest_init(argc, argv);
	int t1 = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	int t2 = timerfd_create(CLOCK_BOOTTIME, TFD_NONBLOCK);
	int t3 = timerfd_create(CLOCK_REALTIME, 0);
	if (t1 < 0 || t2 < 0 || t3 < 0)
		die("timerfd_create");
	struct itimerspec it1 = {.it_interval = {0, 700000000}, .it_value = {2, 500000000}};
	struct itimerspec it2 = {.it_value = {0, 1000000}};
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	struct itimerspec it3 = {.it_value = {now.tv_sec + 60, 0}};
	if (timerfd_settime(t1, 0, &it1, NULL) < 0 || timerfd_settime(t2, 0, &it2, NULL) < 0 ||
	    timerfd_settime(t3, TFD_TIMER_ABSTIME, &it3, NULL) < 0)
		die("timerfd_settime");
	usleep(20000);
	int fds[] = {t1, t2, t3};
	logf_("fds %d %d %d", t1, t2, t3);
	report("before", fds);
	logf_("ready");
	wait_go();
	report("after", fds);
	uint64_t n;
	if (read(t2, &n, 8) != 8)
		die("read t2");
	logf_("t2 ticks %llu", (unsigned long long)n);
	long long t0 = now_ms();
	if (read(t1, &n, 8) != 8)
		die("read t1");
	long long t1ms = now_ms();
	logf_("t1 first %llu after %lld", (unsigned long long)n, t1ms - t0);
	if (read(t1, &n, 8) != 8)
		die("read t1");
	logf_("t1 second %llu after %lld", (unsigned long long)n, now_ms() - t1ms);
	struct itimerspec cur;
	timerfd_gettime(t3, &cur);
	logf_("t3 remaining %ld", (long)cur.it_value.tv_sec);
	logf_("done");
	return 0;
}
