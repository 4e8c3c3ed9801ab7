// shape: a large tree or a large thread group, for the shape benchmarks.
//
// usage: shape LOGFILE procs N   a tree of N processes (each process i
//                                forks processes 2i+1 and 2i+2 below N)
//        shape LOGFILE threads N one process of N threads
//
// Every process logs "up" once its children are forked; with threads,
// the process logs "ready" once all run. Then everything waits.
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *idle(void *arg) {
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

int main(int argc, char **argv) {
	if (argc < 4)
		return 2;
	int log = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	long n = atol(argv[3]);
	if (log < 0 || n < 1)
		return 1;
	if (strcmp(argv[2], "threads") == 0) {
		pthread_attr_t at;
		pthread_attr_init(&at);
		pthread_attr_setstacksize(&at, 64 << 10);
		for (long i = 1; i < n; i++) {
			pthread_t th;
			if (pthread_create(&th, &at, idle, NULL) != 0)
				return 1;
		}
		dprintf(log, "ready\n");
		idle(NULL);
	}
	long me = 0;
	for (int k = 1; k <= 2; k++) {
		long c = 2 * me + k;
		if (c >= n)
			break;
		pid_t p = fork();
		if (p < 0)
			return 1;
		if (p == 0) {
			me = c;
			k = 0; // fork this child's own children
		}
	}
	dprintf(log, "up\n");
	idle(NULL);
}
