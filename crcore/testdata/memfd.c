// memfd: a sealed sparse memfd, a plain one, and a second open file of
// the first; after SIGUSR1 logs the same state and uses the seals.
//
// usage: memfd LOGFILE
#include "fdtest.h"
#include <sys/mman.h>
#include <sys/stat.h>

static void report(const char *tag, const int *fds, int n) {
	static unsigned char buf[9 << 20];
	for (int i = 0; i < n; i++) {
		char path[64], name[256] = {0};
		snprintf(path, sizeof path, "/proc/self/fd/%d", fds[i]);
		if (readlink(path, name, sizeof name - 1) < 0)
			die("readlink");
		struct stat st;
		fstat(fds[i], &st);
		ssize_t got = pread(fds[i], buf, sizeof buf, 0);
		logf_("%s fd %d %s fl=%o cloexec=%d pos=%lld size=%lld mode=%o seals=%d hash=%08x/%zd", tag, fds[i], name,
		      fcntl(fds[i], F_GETFL), fcntl(fds[i], F_GETFD) & FD_CLOEXEC, (long long)lseek(fds[i], 0, SEEK_CUR),
		      (long long)st.st_size, st.st_mode, fcntl(fds[i], F_GET_SEALS), got > 0 ? fnv1a(buf, got, 2166136261u) : 0,
		      got);
	}
}

int main(int argc, char **argv) {
	fdtest_init(argc, argv);
	int m1 = memfd_create("crhook test memfd", MFD_ALLOW_SEALING | MFD_CLOEXEC);
	int m2 = memfd_create("plain", 0);
	if (m1 < 0 || m2 < 0)
		die("memfd_create");
	static unsigned char buf[300000];
	for (size_t i = 0; i < sizeof buf; i++)
		buf[i] = (unsigned char)(i * 13 + i / 509);
	if (write(m1, buf, sizeof buf) != sizeof buf || pwrite(m1, "tail", 4, 8 << 20) != 4)
		die("write m1");
	lseek(m1, 12345, SEEK_SET);
	if (fcntl(m1, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0)
		die("seal");
	if (write(m2, "hello", 5) != 5)
		die("write m2");
	lseek(m2, 2, SEEK_SET);
	char path[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", m1);
	int m3 = open(path, O_RDONLY);
	if (m3 < 0)
		die("reopen");
	lseek(m3, 7, SEEK_SET);
	int fds[] = {m1, m2, m3};
	report("before", fds, 3);
	logf_("ready");
	wait_go();
	report("after", fds, 3);
	int rc = ftruncate(m1, 1);
	logf_("shrink %d errno %d", rc, rc < 0 ? errno : 0);
	if (pwrite(m1, "Z", 1, 0) != 1)
		die("pwrite");
	char c = 0;
	if (pread(m3, &c, 1, 0) != 1)
		die("pread");
	logf_("shared %c", c);
	logf_("done");
	return 0;
}
