// memhog: holds touched, incompressible memory, optionally in a tree of
// processes or with many threads, for the benchmarks in bench/.
//
// usage: memhog LOGFILE MIB [PROCS [THREADS]]
//
// Maps MIB MiB of private anonymous memory and fills every byte with
// xorshift64* output (no zero pages, nothing a compressor or a dedup pass
// could shrink). Then forks PROCS-1 children (default 1: no children),
// each of which only sleeps, and starts THREADS-1 more threads (default
// 1: none) with small stacks, each of which only sleeps. Once all exist
// it appends "ready" to LOGFILE.
//
// On SIGUSR1 the root rehashes its memory and appends "check ok" or
// "check bad" to LOGFILE: a restore that lost or moved a page shows.
// LOGFILE is open only while a line is written, so no dump holds it.
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static const char *logpath;
static volatile sig_atomic_t want_check;

static void logline(const char *s) {
	int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	dprintf(fd, "%s\n", s);
	close(fd);
}

static uint64_t fill(uint64_t *p, size_t n) {
	uint64_t x = 0x9E3779B97F4A7C15ull, h = 0;
	for (size_t i = 0; i < n; i++) {
		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		p[i] = x * 0x2545F4914F6CDD1Dull;
		h = (h ^ p[i]) * 0x100000001B3ull;
	}
	return h;
}

static uint64_t hash(const uint64_t *p, size_t n) {
	uint64_t h = 0;
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001B3ull;
	return h;
}

static void on_usr1(int sig) {
	(void)sig;
	want_check = 1;
}

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static long started;

static void *idle_thread(void *arg) {
	(void)arg;
	pthread_mutex_lock(&mu);
	started++;
	pthread_cond_signal(&cv);
	pthread_mutex_unlock(&mu);
	for (;;)
		pause();
	return NULL;
}

int main(int argc, char **argv) {
	if (argc < 3)
		return 2;
	logpath = argv[1];
	size_t bytes = (size_t)atol(argv[2]) << 20;
	long procs = argc > 3 ? atol(argv[3]) : 1;
	long threads = argc > 4 ? atol(argv[4]) : 1;

	// SIGUSR1 stays blocked everywhere but in main's sigsuspend, so the
	// request can be neither lost nor taken by another thread.
	sigset_t usr1, old;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, &old);
	sigdelset(&old, SIGUSR1);

	uint64_t *mem = NULL, want = 0;
	size_t words = bytes / 8;
	if (bytes > 0) {
		mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (mem == MAP_FAILED)
			return 1;
		want = fill(mem, words);
	}

	if (procs > 1) {
		int p[2];
		if (pipe2(p, O_CLOEXEC) < 0)
			return 1;
		for (long i = 1; i < procs; i++) {
			pid_t pid = fork();
			if (pid < 0)
				return 1;
			if (pid == 0) {
				close(p[0]);
				if (write(p[1], "x", 1) != 1)
					_exit(1);
				close(p[1]);
				for (;;)
					pause();
			}
		}
		close(p[1]);
		char buf[256];
		long got = 0;
		while (got < procs - 1) {
			ssize_t n = read(p[0], buf, sizeof(buf));
			if (n <= 0)
				return 1;
			got += n;
		}
		close(p[0]);
	}

	if (threads > 1) {
		pthread_attr_t a;
		pthread_attr_init(&a);
		pthread_attr_setstacksize(&a, 64 << 10);
		for (long i = 1; i < threads; i++) {
			pthread_t t;
			if (pthread_create(&t, &a, idle_thread, NULL) != 0)
				return 1;
		}
		pthread_mutex_lock(&mu);
		while (started < threads - 1)
			pthread_cond_wait(&cv, &mu);
		pthread_mutex_unlock(&mu);
	}

	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	logline("ready");
	for (;;) {
		sigsuspend(&old);
		if (want_check) {
			want_check = 0;
			logline(mem == NULL || hash(mem, words) == want ? "check ok" : "check bad");
		}
	}
}
