// sharefd: children that share their parent's fd table or fs info.
//
// usage: sharefd LOGFILE
//
// The parent clones F with CLONE_FILES and S with CLONE_FS (separate
// address spaces: plain fork semantics otherwise), logs "ready F S", and
// all three count in their own line every 10 ms ("P n", "F n", "S n").
// On SIGUSR1, F opens /dev/null and logs "F opened N"; S changes
// directory to /tmp and sets umask 027 and logs "S moved". The parent
// sees both through what it shares: on SIGUSR2 it logs "P fd N ok" if fd
// N (the last F opened) is open in its table, and "P cwd DIR umask M".
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int logfd;
static volatile sig_atomic_t usr1, usr2;
static void on_usr1(int s) { (void)s; usr1 = 1; }
static void on_usr2(int s) { (void)s; usr2 = 1; }

static void loop(const char *name, int (*act)(void)) {
	unsigned long n = 0;
	struct timespec ts = {0, 10 * 1000 * 1000};
	for (;;) {
		dprintf(logfd, "%s %lu\n", name, ++n);
		nanosleep(&ts, NULL);
		if (usr1 && act) {
			usr1 = 0;
			act();
		}
	}
}

static int f_act(void) {
	int fd = open("/dev/null", O_RDONLY);
	dprintf(logfd, "F opened %d\n", fd);
	return 0;
}

static int s_act(void) {
	if (chdir("/tmp") == 0) {
		umask(027);
		dprintf(logfd, "S moved\n");
	}
	return 0;
}

static int f_main(void *arg) { (void)arg; loop("F", f_act); return 0; }
static int s_main(void *arg) { (void)arg; loop("S", s_act); return 0; }

static int p_act(void) { return 0; }

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	logfd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (logfd < 0)
		return 1;
	struct sigaction sa = {.sa_handler = on_usr1, .sa_flags = SA_RESTART};
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_usr2;
	sigaction(SIGUSR2, &sa, NULL);
	size_t sz = 256 << 10;
	char *fs = malloc(sz), *ss = malloc(sz);
	pid_t f = clone(f_main, fs + sz, CLONE_FILES | SIGCHLD, NULL);
	pid_t s = clone(s_main, ss + sz, CLONE_FS | SIGCHLD, NULL);
	if (f < 0 || s < 0)
		return 1;
	dprintf(logfd, "ready %d %d\n", f, s);
	unsigned long n = 0;
	struct timespec ts = {0, 10 * 1000 * 1000};
	int last = -1;
	for (;;) {
		dprintf(logfd, "P %lu\n", ++n);
		nanosleep(&ts, NULL);
		(void)p_act;
		if (usr2) {
			usr2 = 0;
			// The highest open fd below 64 is the one F opened last.
			for (int fd = 63; fd > 2; fd--)
				if (fcntl(fd, F_GETFD) >= 0 && fd != logfd) {
					last = fd;
					break;
				}
			char cwd[256] = "";
			if (!getcwd(cwd, sizeof cwd))
				strcpy(cwd, "?");
			mode_t m = umask(0);
			umask(m);
			dprintf(logfd, "P fd %d cwd %s umask %03o\n", last, cwd, m);
		}
	}
}
