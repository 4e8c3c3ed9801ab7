// regextra: holds a file unlinked while open, files opened with
// O_APPEND|O_NONBLOCK, O_DIRECT and O_PATH, and a sparse fd table
// (fds above 1024), then waits.
//
// usage: regextra LOGFILE DIR
//
// DIR holds "ghost", "app" and "direct", which the test created. The
// program opens
//   ghost   O_RDWR, writes "+tail" at its end, seeks to 4, unlinks it
//           ("ghost"), and dups it to fd 4000 ("ghosthi")
//   app     O_WRONLY|O_APPEND|O_NONBLOCK, moved to fd 1025 ("app")
//   direct  O_RDONLY|O_DIRECT ("direct")
//   DIR     O_PATH ("path")
// and logs "fds NAME=N ...", then "ready".
//
// SIGUSR1: reads the rest of ghost from its position and logs
// "ghost DATA nlink=N", appends "more" through app, logs "app N";
// "done". Errors are logged as "err WHAT ERRNO".
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t want_check;
static int logfd;

static void on_usr1(int s) { (void)s; want_check = 1; }

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
	char p[4096];
	const char *dir = argv[2];

	snprintf(p, sizeof p, "%s/ghost", dir);
	int ghost = must(open(p, O_RDWR), "open ghost");
	must(lseek(ghost, 0, SEEK_END), "lseek");
	must(write(ghost, "+tail", 5), "write");
	must(lseek(ghost, 4, SEEK_SET), "lseek");
	must(unlink(p), "unlink");
	int ghosthi = must(dup2(ghost, 4000), "dup2");

	snprintf(p, sizeof p, "%s/app", dir);
	int a = must(open(p, O_WRONLY | O_APPEND | O_NONBLOCK), "open app");
	int app = must(dup2(a, 1025), "dup2");
	close(a);
	snprintf(p, sizeof p, "%s/direct", dir);
	int direct = must(open(p, O_RDONLY | O_DIRECT), "open direct");
	int path = must(open(dir, O_PATH), "open path");

	struct sigaction sa = {0};
	sa.sa_flags = SA_RESTART;
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	dprintf(logfd, "fds ghost=%d ghosthi=%d app=%d direct=%d path=%d\n", ghost, ghosthi, app, direct, path);
	dprintf(logfd, "ready\n");

	struct timespec ts = {0, 5 * 1000 * 1000};
	while (!want_check)
		nanosleep(&ts, NULL);
	char buf[256];
	int n = must(read(ghosthi, buf, sizeof buf - 1), "read ghost");
	buf[n] = 0;
	struct stat st;
	must(fstat(ghost, &st), "fstat");
	dprintf(logfd, "ghost %s nlink=%d\n", buf, (int)st.st_nlink);
	dprintf(logfd, "app %d\n", (int)must(write(app, "more", 4), "write app"));
	dprintf(logfd, "done\n");
	for (;;)
		nanosleep(&ts, NULL);
}
