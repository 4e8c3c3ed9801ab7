// bigshape: large anonymous mappings in the shapes a restore that fills
// memory through a userfaultfd must keep as they were.
//
// usage: bigshape LOGFILE
//
// In one PROT_NONE reservation, apart from each other:
//   - a: 24 MiB, read-write, filled; b: 4 MiB, filled elsewhere and moved
//     (mremap) to where a ends. The two touch but have separate
//     anon_vmas, so the kernel keeps them apart, and so must a restore;
//   - c: 24 MiB, filled, then its middle 8 MiB made read-only: restored
//     writable, filled, then protected;
//   - a thread's 24 MiB stack, filled below the thread's TLS and rseq
//     area at its top: the kernel writes the rseq area when it is
//     registered, while the restore fills memory;
//   - d: 16 MiB, read-write, filled.
//
// It appends "ready" to LOGFILE, then "count N" every 10 ms from the
// thread. On SIGUSR1 the main thread rehashes every region and appends
// "check ok" or "check bad".
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MIB (1ul << 20)

static const char *logpath;
static volatile sig_atomic_t want_check;

static void logline(const char *s) {
	int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	dprintf(fd, "%s\n", s);
	close(fd);
}

static uint64_t fill(void *p, size_t bytes, uint64_t x) {
	uint64_t *w = p, h = 0;
	for (size_t i = 0; i < bytes / 8; i++) {
		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		w[i] = x * 0x2545F4914F6CDD1Dull;
		h = (h ^ w[i]) * 0x100000001B3ull;
	}
	return h;
}

static uint64_t hash(const void *p, size_t bytes) {
	const uint64_t *w = p;
	uint64_t h = 0;
	for (size_t i = 0; i < bytes / 8; i++)
		h = (h ^ w[i]) * 0x100000001B3ull;
	return h;
}

static void on_usr1(int sig) {
	(void)sig;
	want_check = 1;
}

static char *stack;
static uint64_t stack_want;
#define STACK (24 * MIB)
#define STACK_FILLED (20 * MIB)

static void *counter(void *arg) {
	(void)arg;
	for (unsigned long n = 1;; n++) {
		char line[32];
		snprintf(line, sizeof(line), "count %lu", n);
		logline(line);
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	return NULL;
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	logpath = argv[1];
	sigset_t usr1, old;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, &old);
	sigdelset(&old, SIGUSR1);

	char *r = mmap(NULL, 128 * MIB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (r == MAP_FAILED)
		return 1;
	const int rw = PROT_READ | PROT_WRITE, fl = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED;
	char *a = mmap(r + 1 * MIB, 24 * MIB, rw, fl, -1, 0);
	if (a == MAP_FAILED)
		return 1;
	uint64_t want_a = fill(a, 24 * MIB, 1);
	char *b = mmap(NULL, 4 * MIB, rw, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (b == MAP_FAILED)
		return 1;
	uint64_t want_b = fill(b, 4 * MIB, 2);
	if (mremap(b, 4 * MIB, 4 * MIB, MREMAP_MAYMOVE | MREMAP_FIXED, a + 24 * MIB) == MAP_FAILED)
		return 1;
	b = a + 24 * MIB;

	char *c = mmap(r + 33 * MIB, 24 * MIB, rw, fl, -1, 0);
	if (c == MAP_FAILED)
		return 1;
	uint64_t want_c = fill(c, 24 * MIB, 3);
	if (mprotect(c + 8 * MIB, 8 * MIB, PROT_READ) != 0)
		return 1;

	stack = mmap(r + 60 * MIB, STACK, rw, fl, -1, 0);
	if (stack == MAP_FAILED)
		return 1;
	stack_want = fill(stack, STACK_FILLED, 4);

	char *d = mmap(r + 90 * MIB, 16 * MIB, rw, fl, -1, 0);
	if (d == MAP_FAILED)
		return 1;
	uint64_t want_d = fill(d, 16 * MIB, 5);

	pthread_attr_t at;
	pthread_attr_init(&at);
	pthread_attr_setstack(&at, stack, STACK);
	pthread_t t;
	if (pthread_create(&t, &at, counter, NULL) != 0)
		return 1;

	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	logline("ready");
	for (;;) {
		sigsuspend(&old);
		if (want_check) {
			want_check = 0;
			int ok = hash(a, 24 * MIB) == want_a && hash(b, 4 * MIB) == want_b &&
			         hash(c, 24 * MIB) == want_c && hash(stack, STACK_FILLED) == stack_want &&
			         hash(d, 16 * MIB) == want_d;
			logline(ok ? "check ok" : "check bad");
		}
	}
}
