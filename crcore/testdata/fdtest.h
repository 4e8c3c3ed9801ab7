// fdtest.h: what the fd-kind test programs share. Each logs to the file
// named by argv[1], sets up its files, logs "ready", waits for SIGUSR1
// (dump and restore happen meanwhile), then proves its state and logs
// "done".
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int logfd = -1;

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...) {
	char buf[4096];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof buf - 2)
		n = sizeof buf - 2;
	buf[n++] = '\n';
	if (write(logfd, buf, n) < 0)
		_exit(3);
}

#define die(what) do { logf_("fail %s errno %d", what, errno); exit(1); } while (0)

static volatile sig_atomic_t go;
static void on_usr1(int sig) { (void)sig; go = 1; }
static sigset_t waitmask;

// fdtest_init opens the log and blocks SIGUSR1 until wait_go.
static void fdtest_init(int argc, char **argv) {
	if (argc < 2)
		exit(2);
	logfd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (logfd < 0)
		exit(1);
	// Keep the log out of the way of the fd numbers the tests use.
	int hi = fcntl(logfd, F_DUPFD_CLOEXEC, 100);
	if (hi < 0)
		exit(1);
	close(logfd);
	logfd = hi;
	struct sigaction sa = {.sa_handler = on_usr1};
	sigaction(SIGUSR1, &sa, NULL);
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	sigprocmask(SIG_BLOCK, &s, &waitmask);
	sigdelset(&waitmask, SIGUSR1);
}

__attribute__((unused)) static void wait_go(void) {
	while (!go)
		sigsuspend(&waitmask);
}

// fnv1a hashes data for byte-exact comparisons.
__attribute__((unused)) static unsigned fnv1a(const unsigned char *p, size_t n, unsigned h) {
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

// fdinfo_line logs the lines of /proc/self/fdinfo/FD that start with one
// of the prefixes, prefixed by tag.
__attribute__((unused)) static void fdinfo_lines(const char *tag, int fd, const char *const *prefixes) {
	char path[64], buf[8192];
	snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
	int f = open(path, O_RDONLY | O_CLOEXEC);
	if (f < 0)
		die("open fdinfo");
	ssize_t n = read(f, buf, sizeof buf - 1);
	close(f);
	if (n < 0)
		die("read fdinfo");
	buf[n] = 0;
	for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n"))
		for (const char *const *p = prefixes; *p; p++)
			if (strncmp(l, *p, strlen(*p)) == 0)
				logf_("%s fd %d %s", tag, fd, l);
}

// fd_flags logs the status flags and close-on-exec of fd.
__attribute__((unused)) static void fd_flags(const char *tag, int fd) {
	logf_("%s fd %d fl=%o cloexec=%d", tag, fd, fcntl(fd, F_GETFL), fcntl(fd, F_GETFD) & FD_CLOEXEC);
}
