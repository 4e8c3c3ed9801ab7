// sibshare: siblings that share an fd table or fs info their parent does
// not hold.
//
// usage: sibshare LOGFILE
//
// The root forks A; A clones B with CLONE_PARENT | CLONE_FILES and C
// with CLONE_PARENT | CLONE_FS, so B and C are the root's children, B
// sharing A's fd table (B then starts a session of its own), C sharing
// A's cwd, root and umask. On SIGUSR1 B opens /dev/null at fd 77 and
// logs "B opened 77", and C moves to /tmp with umask 027 and logs "C
// moved"; on SIGUSR2 A logs "A fd77 OK cwd DIR umask UMASK" (OK is 1
// when fd 77 is open in its table). All log "ready A B C" and wait.
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int logfd;
static volatile sig_atomic_t usr1, usr2;

static void on_usr1(int sig) { (void)sig; usr1 = 1; }
static void on_usr2(int sig) { (void)sig; usr2 = 1; }

// nap waits 10 ms. The loops below poll their flag with it rather than
// pause(), which would miss a signal that lands between the check and
// the call (as one sent right after a restore may).
static void nap(void) {
	struct timespec ts = {0, 10 * 1000 * 1000};
	nanosleep(&ts, NULL);
}

static int b_main(void *arg) {
	(void)arg;
	setsid();
	for (;;) {
		nap();
		if (usr1) {
			usr1 = 0;
			int fd = open("/dev/null", O_RDONLY);
			if (fd < 0 || dup2(fd, 77) != 77)
				_exit(1);
			close(fd);
			dprintf(logfd, "B opened 77\n");
		}
	}
	return 0;
}

static int c_main(void *arg) {
	(void)arg;
	for (;;) {
		nap();
		if (usr1) {
			usr1 = 0;
			if (chdir("/tmp") < 0)
				_exit(1);
			umask(027);
			dprintf(logfd, "C moved\n");
		}
	}
	return 0;
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	logfd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (logfd < 0)
		return 1;
	struct sigaction sa = {.sa_handler = on_usr1};
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_usr2;
	sigaction(SIGUSR2, &sa, NULL);
	if (chdir("/") < 0)
		return 1;
	pid_t a = fork();
	if (a == 0) {
		size_t sz = 64 << 10;
		char *st = malloc(2 * sz);
		pid_t b = clone(b_main, st + sz, CLONE_PARENT | CLONE_FILES, NULL);
		pid_t c = clone(c_main, st + 2 * sz, CLONE_PARENT | CLONE_FS, NULL);
		if (b < 0 || c < 0)
			_exit(1);
		while (getsid(b) != b) // B's setsid, before the tree is told
			usleep(1000);
		dprintf(logfd, "ready %d %d %d\n", getpid(), b, c);
		for (;;) {
			nap();
			if (usr2) {
				usr2 = 0;
				char cwd[256];
				if (!getcwd(cwd, sizeof cwd))
					_exit(1);
				mode_t m = umask(0);
				umask(m);
				dprintf(logfd, "A fd77 %d cwd %s umask %03o\n", fcntl(77, F_GETFD) >= 0, cwd, m);
			}
		}
	}
	for (;;)
		pause();
}
