// fifo: opens the FIFO PATH for reading and writing (two open files),
// queues data; after SIGUSR1 reads it back.
//
// usage: fifo LOGFILE PATH
#include "fdtest.h"
#include <sys/ioctl.h>

static void report(const char *tag, int r, int w) {
	int fds[] = {r, w};
	for (int i = 0; i < 2; i++) {
		int q = -1;
		ioctl(fds[i], FIONREAD, &q);
		logf_("%s fd %d fl=%o cloexec=%d sz=%d q=%d", tag, fds[i], fcntl(fds[i], F_GETFL),
		      fcntl(fds[i], F_GETFD) & FD_CLOEXEC, fcntl(fds[i], F_GETPIPE_SZ), q);
	}
}

int main(int argc, char **argv) {
	fdtest_init(argc, argv);
	if (argc < 3)
		return 2;
	int r = open(argv[2], O_RDONLY | O_NONBLOCK);
	int w = open(argv[2], O_WRONLY | O_CLOEXEC);
	if (r < 0 || w < 0)
		die("open fifo");
	if (fcntl(w, F_SETPIPE_SZ, 128 << 10) < 0 || write(w, "through the fifo", 16) != 16)
		die("fill fifo");
	report("before", r, w);
	logf_("ready");
	wait_go();
	report("after", r, w);
	char buf[64] = {0};
	ssize_t n = read(r, buf, sizeof buf - 1);
	logf_("read %zd %s", n, buf);
	logf_("done");
	return 0;
}
