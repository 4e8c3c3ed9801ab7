// chrooted: a process confined by chroot(2).
//
// usage: chrooted LOGFILE DIR [share]
//
// Opens LOGFILE, chroots into DIR (cwd: its root), then logs "count N"
// every 10 ms. On SIGUSR1 it logs "root ok" when /marker (a file the
// test put at DIR/marker) is there, else "root lost", and "cwd PATH".
// With "share", it first clones a child that shares its fs info
// (CLONE_FS: root, cwd, umask) and does the same, its lines prefixed
// "child "; "ready PID CHILDPID" follows once both run.
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t want;
static void on_usr1(int s) { (void)s; want = 1; }
static int log_fd;

static int loop(void *arg) {
	const char *who = arg;
	struct sigaction sa = {.sa_handler = on_usr1, .sa_flags = SA_RESTART};
	sigaction(SIGUSR1, &sa, NULL);
	struct timespec ts = {0, 10 * 1000 * 1000};
	for (unsigned long n = 1;; n++) {
		dprintf(log_fd, "%scount %lu\n", who, n);
		nanosleep(&ts, NULL);
		if (want) {
			want = 0;
			char cwd[256] = "?";
			if (!getcwd(cwd, sizeof cwd))
				cwd[0] = '?', cwd[1] = 0;
			dprintf(log_fd, "%s%s\n%scwd %s\n", who, access("/marker", F_OK) == 0 ? "root ok" : "root lost", who, cwd);
		}
	}
	return 0;
}

static char stack[64 << 10] __attribute__((aligned(16)));

int main(int argc, char **argv) {
	if (argc < 3)
		return 2;
	log_fd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (log_fd < 0 || chroot(argv[2]) != 0 || chdir("/") != 0)
		return 1;
	if (argc > 3 && strcmp(argv[3], "share") == 0) {
		int child = clone(loop, stack + sizeof stack, CLONE_FS | SIGCHLD, "child ");
		if (child < 0)
			return 1;
		dprintf(log_fd, "ready %d %d\n", getpid(), child);
	}
	return loop("");
}
