// chrooted: a process confined by chroot(2).
//
// usage: chrooted LOGFILE DIR
//
// Opens LOGFILE, chroots into DIR (cwd: its root), then logs "count N"
// every 10 ms. On SIGUSR1 it logs "root ok" when /marker (a file the
// test put at DIR/marker) is there, else "root lost", and "cwd PATH".
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t want;
static void on_usr1(int s) { (void)s; want = 1; }

int main(int argc, char **argv) {
	if (argc < 3)
		return 2;
	int log = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (log < 0 || chroot(argv[2]) != 0 || chdir("/") != 0)
		return 1;
	struct sigaction sa = {.sa_handler = on_usr1, .sa_flags = SA_RESTART};
	sigaction(SIGUSR1, &sa, NULL);
	struct timespec ts = {0, 10 * 1000 * 1000};
	for (unsigned long n = 1;; n++) {
		dprintf(log, "count %lu\n", n);
		nanosleep(&ts, NULL);
		if (want) {
			want = 0;
			char cwd[256] = "?";
			if (!getcwd(cwd, sizeof cwd))
				cwd[0] = '?', cwd[1] = 0;
			dprintf(log, "%s\ncwd %s\n", access("/marker", F_OK) == 0 ? "root ok" : "root lost", cwd);
		}
	}
}
