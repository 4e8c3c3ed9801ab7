// threads: a multi-threaded counter.
//
// usage: threads LOGFILE NTHREADS
//
// Each thread names itself "worker-I", blocks a signal of its own
// (SIGRTMIN+I), and loops: increment its counter, log "thread I count N
// tid T", sleep 10 ms. The main thread logs "ready" once all run, then
// joins (never returns).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int logfd;

static void *worker(void *arg) {
	long i = (long)arg;
	char nm[16];
	snprintf(nm, sizeof nm, "worker-%ld", i);
	pthread_setname_np(pthread_self(), nm);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGRTMIN + (int)i);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	unsigned long n = 0;
	for (;;) {
		dprintf(logfd, "thread %ld count %lu tid %ld\n", i, ++n, (long)syscall(SYS_gettid));
		struct timespec ts = {0, 10 * 1000 * 1000};
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
	return NULL;
}

int main(int argc, char **argv) {
	if (argc < 3)
		return 2;
	logfd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (logfd < 0)
		return 1;
	long n = atol(argv[2]);
	pthread_t *t = calloc(n, sizeof *t);
	for (long i = 0; i < n; i++)
		if (pthread_create(&t[i], NULL, worker, (void *)i) != 0)
			return 1;
	dprintf(logfd, "ready\n");
	for (long i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	return 0;
}
