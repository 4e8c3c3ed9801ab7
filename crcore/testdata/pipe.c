// pipe: holds pipes with queued data; after SIGUSR1 reads it back.
//
// usage: pipe LOGFILE
#include "fdtest.h"
#include <sys/ioctl.h>

#define ALEN 100000

static unsigned char pat(int i) { return (unsigned char)(i * 7 + i / 251); }

static void report(const char *tag, const int *fds, int n) {
	for (int i = 0; i < n; i++) {
		int q = -1;
		ioctl(fds[i], FIONREAD, &q);
		logf_("%s fd %d fl=%o cloexec=%d sz=%d q=%d", tag, fds[i], fcntl(fds[i], F_GETFL),
		      fcntl(fds[i], F_GETFD) & FD_CLOEXEC, fcntl(fds[i], F_GETPIPE_SZ), q);
	}
}

int main(int argc, char **argv) {
	fdtest_init(argc, argv);
	static unsigned char buf[ALEN];
	for (int i = 0; i < ALEN; i++)
		buf[i] = pat(i);

	// a: binary data in a 256 KiB pipe; non-blocking read end,
	// close-on-exec write end.
	int a[2];
	if (pipe2(a, 0) < 0 || fcntl(a[1], F_SETPIPE_SZ, 256 << 10) < 0)
		die("pipe a");
	for (int off = 0; off < ALEN;) {
		ssize_t n = write(a[1], buf + off, off + 4096 <= ALEN ? 4096 : ALEN - off);
		if (n <= 0)
			die("write a");
		off += n;
	}
	fcntl(a[0], F_SETFL, O_NONBLOCK);
	fcntl(a[1], F_SETFD, FD_CLOEXEC);
	// b: empty, both ends non-blocking.
	int b[2];
	if (pipe2(b, O_NONBLOCK) < 0)
		die("pipe b");
	// stdin: a pipe of our own, its write end at fd 20.
	int c[2];
	if (pipe(c) < 0 || write(c[1], "stdin-data", 10) != 10)
		die("pipe c");
	dup2(c[0], 0);
	dup2(c[1], 20);
	close(c[0]);
	close(c[1]);
	// d: only the read end is left, with data then EOF.
	int d[2];
	if (pipe(d) < 0 || write(d[1], "orphan", 6) != 6)
		die("pipe d");
	close(d[1]);
	// e: the write end opened a second time through /proc.
	int e[2];
	if (pipe(e) < 0)
		die("pipe e");
	char path[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", e[1]);
	int e2 = open(path, O_WRONLY);
	if (e2 < 0)
		die("reopen e");

	int all[] = {0, 20, a[0], a[1], b[0], b[1], d[0], e[0], e[1], e2};
	int nall = sizeof all / sizeof all[0];
	logf_("fds a=%d,%d b=%d,%d d=%d e=%d,%d,%d", a[0], a[1], b[0], b[1], d[0], e[0], e[1], e2);
	report("before", all, nall);
	logf_("ready");
	wait_go();
	report("after", all, nall);

	static unsigned char got[ALEN + 1];
	int len = 0;
	for (;;) {
		ssize_t n = read(a[0], got + len, sizeof got - len);
		if (n <= 0)
			break;
		len += n;
	}
	logf_("a len=%d hash=%08x exact=%d", len, fnv1a(got, len, 2166136261u), len == ALEN && memcmp(got, buf, ALEN) == 0);

	char s[64] = {0};
	ssize_t n = read(0, s, sizeof s - 1);
	logf_("stdin %zd %s", n, n > 0 ? s : "");

	memset(s, 0, sizeof s);
	n = read(d[0], s, sizeof s - 1);
	ssize_t n2 = read(d[0], s + 32, 8);
	logf_("d %zd %s then %zd", n, s, n2);

	memset(s, 0, sizeof s);
	if (write(b[1], "ping", 4) != 4)
		die("write b");
	n = read(b[0], s, sizeof s - 1);
	logf_("b %zd %s", n, s);

	memset(s, 0, sizeof s);
	if (write(e2, "x", 1) != 1 || write(e[1], "y", 1) != 1)
		die("write e");
	n = read(e[0], s, sizeof s - 1);
	logf_("e %zd %s", n, s);
	logf_("done");
	return 0;
}
