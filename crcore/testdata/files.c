// files: holds regular files, a directory and character devices open
// with various flags and positions, then waits.
//
// usage: files LOGFILE DIR
//
// DIR holds the files "data", "append", "rw", "shared" and "high", which
// the test created. The program opens:
//   data    O_RDONLY, seeked to 10                   (fd logged as "ro")
//   append  O_WRONLY|O_APPEND                         ("app")
//   rw      O_RDWR|O_CLOEXEC, seeked to 3             ("rw")
//   DIR     O_RDONLY|O_DIRECTORY                      ("dir")
//   /dev/null O_WRONLY, /dev/zero O_RDONLY            ("null", "zero")
//   shared  O_RDWR seeked to 7, and a dup of it       ("sh", "shdup")
//   high    O_RDONLY seeked to 5, moved to fd 1000    ("high")
// and logs "fds ro=N app=N ...", then "ready".
//
// SIGUSR1: read 8 bytes from ro, 4 from high, 4 from zero, append "tail"
// through app, write 2 bytes through null; log
// "io ro=BYTES high=BYTES zero=HEX app=N null=N".
// SIGUSR2: lseek(sh, 20, SEEK_SET); log "seeked".
// The handlers only set flags; the main loop sleeps 5 ms at a time.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t want_io, want_seek;
static int logfd;

static void on_usr1(int s) { (void)s; want_io = 1; }
static void on_usr2(int s) { (void)s; want_seek = 1; }

static int must(int fd, const char *what) {
	if (fd < 0) {
		dprintf(logfd, "err %s %d\n", what, errno);
		exit(1);
	}
	return fd;
}

static int openat_dir(const char *dir, const char *name, int flags) {
	char p[4096];
	snprintf(p, sizeof p, "%s/%s", dir, name);
	return must(open(p, flags), name);
}

int main(int argc, char **argv) {
	if (argc < 3)
		return 2;
	logfd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (logfd < 0)
		return 1;
	const char *dir = argv[2];

	int ro = openat_dir(dir, "data", O_RDONLY);
	must(lseek(ro, 10, SEEK_SET), "lseek ro");
	int app = openat_dir(dir, "append", O_WRONLY | O_APPEND);
	int rw = openat_dir(dir, "rw", O_RDWR | O_CLOEXEC);
	must(lseek(rw, 3, SEEK_SET), "lseek rw");
	int dfd = must(open(dir, O_RDONLY | O_DIRECTORY), "dir");
	int null = must(open("/dev/null", O_WRONLY), "null");
	int zero = must(open("/dev/zero", O_RDONLY), "zero");
	int sh = openat_dir(dir, "shared", O_RDWR);
	must(lseek(sh, 7, SEEK_SET), "lseek sh");
	int shdup = must(dup(sh), "dup");
	int h = openat_dir(dir, "high", O_RDONLY);
	must(lseek(h, 5, SEEK_SET), "lseek high");
	int high = must(dup2(h, 1000), "dup2");
	close(h);

	struct sigaction sa = {0};
	sa.sa_flags = SA_RESTART;
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_usr2;
	sigaction(SIGUSR2, &sa, NULL);

	dprintf(logfd, "fds ro=%d app=%d rw=%d dir=%d null=%d zero=%d sh=%d shdup=%d high=%d\n",
		ro, app, rw, dfd, null, zero, sh, shdup, high);
	dprintf(logfd, "ready\n");
	for (;;) {
		struct timespec ts = {0, 5 * 1000 * 1000};
		nanosleep(&ts, NULL);
		if (want_io) {
			want_io = 0;
			char a[9] = {0}, b[5] = {0};
			unsigned char z[4] = {1, 1, 1, 1};
			ssize_t na = read(ro, a, 8);
			ssize_t nb = read(high, b, 4);
			ssize_t nz = read(zero, z, 4);
			ssize_t nw = write(app, "tail", 4);
			ssize_t nn = write(null, "xx", 2);
			if (na != 8 || nb != 4 || nz != 4)
				dprintf(logfd, "err io %zd %zd %zd %d\n", na, nb, nz, errno);
			dprintf(logfd, "io ro=%s high=%s zero=%02x%02x%02x%02x app=%zd null=%zd\n",
				a, b, z[0], z[1], z[2], z[3], nw, nn);
		}
		if (want_seek) {
			want_seek = 0;
			if (lseek(sh, 20, SEEK_SET) != 20)
				dprintf(logfd, "err lseek %d\n", errno);
			dprintf(logfd, "seeked\n");
		}
	}
}
