// threadcreds: threads of one process with different credentials.
//
// usage: threadcreds LOGFILE
//
// The main thread stays root. Worker 1 changes its own uids and gids
// with raw syscalls (credentials are per thread in the kernel; glibc's
// setresuid would change every thread) and drops its capabilities with
// them; worker 2 stays as it came. Each thread logs "tN count K" every
// 10 ms; "ready" follows once both workers have set up.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int logfd;
static volatile int up;

static void loop(int n) {
	for (unsigned long k = 1;; k++) {
		dprintf(logfd, "t%d count %lu tid %ld\n", n, k, (long)syscall(SYS_gettid));
		struct timespec ts = {0, 10 * 1000 * 1000};
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
}

static void *worker(void *arg) {
	long n = (long)arg;
	if (n == 1) {
		if (syscall(SYS_setresgid, 2001, 2002, 2003) || syscall(SYS_setresuid, 1001, 1002, 1003)) {
			dprintf(logfd, "setup errno %d\n", errno);
			exit(1);
		}
	}
	__sync_fetch_and_add(&up, 1);
	loop((int)n);
	return NULL;
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	logfd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (logfd < 0)
		return 1;
	pthread_t t;
	for (long n = 1; n <= 2; n++)
		if (pthread_create(&t, NULL, worker, (void *)n))
			return 1;
	while (up < 2)
		usleep(1000);
	dprintf(logfd, "ready\n");
	loop(0);
}
