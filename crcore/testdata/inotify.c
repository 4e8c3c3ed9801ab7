// inotify: watches on DIR (create), DIR/f (modify) and DIR/sub (create),
// with a gap in the watch numbers (a watch on DIR/x added and removed);
// after SIGUSR1 logs the events the test causes.
//
// usage: inotify LOGFILE DIR
#include "fdtest.h"
#include <poll.h>
#include <sys/inotify.h>

static void report(const char *tag, int in) {
	char buf[8192], path[64];
	snprintf(path, sizeof path, "/proc/self/fdinfo/%d", in);
	int f = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = read(f, buf, sizeof buf - 1);
	close(f);
	if (n < 0)
		die("read fdinfo");
	buf[n] = 0;
	fd_flags(tag, in);
	for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n")) {
		unsigned wd, mask;
		unsigned long ino;
		if (sscanf(l, "inotify wd:%x ino:%lx sdev:%*x mask:%x", &wd, &ino, &mask) == 3)
			logf_("%s wd %u ino %lx mask %x", tag, wd, ino, mask);
	}
}

int main(int argc, char **argv) {
	fdtest_init(argc, argv);
	if (argc < 3)
		return 2;
	char p[4096];
	int in = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (in < 0)
		die("inotify_init1");
	int w1 = inotify_add_watch(in, argv[2], IN_CREATE);
	snprintf(p, sizeof p, "%s/f", argv[2]);
	int w2 = inotify_add_watch(in, p, IN_MODIFY);
	snprintf(p, sizeof p, "%s/x", argv[2]);
	int wx = inotify_add_watch(in, p, IN_ATTRIB);
	if (inotify_rm_watch(in, wx) < 0)
		die("rm_watch");
	snprintf(p, sizeof p, "%s/sub", argv[2]);
	int w4 = inotify_add_watch(in, p, IN_CREATE | IN_ONLYDIR);
	if (w1 < 0 || w2 < 0 || w4 < 0)
		die("add_watch");
	char buf[4096];
	while (read(in, buf, sizeof buf) > 0) // the IN_IGNORED of wx
		;
	logf_("watches %d %d %d", w1, w2, w4);
	report("before", in);
	logf_("ready");
	wait_go();
	report("after", in);
	int seen = 0;
	while (seen < 3) {
		struct pollfd pf = {.fd = in, .events = POLLIN};
		if (poll(&pf, 1, 5000) != 1)
			die("poll inotify");
		ssize_t n = read(in, buf, sizeof buf);
		if (n <= 0)
			die("read inotify");
		for (char *q = buf; q < buf + n;) {
			struct inotify_event *ev = (struct inotify_event *)q;
			logf_("event wd %d mask %x name %s", ev->wd, ev->mask, ev->len ? ev->name : "-");
			q += sizeof *ev + ev->len;
			seen++;
		}
	}
	logf_("done");
	return 0;
}
