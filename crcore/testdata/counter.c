// counter: a test target that counts in memory and logs to a file.
//
// usage: counter LOGFILE [catch]
//
// It sets up memory of every common kind (brk heap, a large malloc that
// glibc serves with mmap, anonymous mappings with each protection, a
// private file mapping with some pages changed), then loops: increment a
// counter, append "count N" to LOGFILE, sleep 10 ms in nanosleep.
// SIGUSR1 asks for a brk check ("brk OLD NEW END" lines), SIGUSR2 for a
// CPU migration check ("cpu WANT GOT" lines). The handlers only set flags
// (with SA_RESTART), so they also test restored sigactions. With "catch",
// SIGURG, SIGWINCH and SIGCHLD get a handler too, which counts them and
// logs "caught N" (crhook's crash-safe batches need one of those three
// without a handler, and fall back to one syscall a stop without).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/rseq.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t want_brk, want_cpu;
static volatile unsigned long counter;
static int logfd;

static void on_usr1(int s) { (void)s; want_brk = 1; }
static void on_usr2(int s) { (void)s; want_cpu = 1; }
static volatile sig_atomic_t caught;
static void on_other(int s) { (void)s; caught++; }

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...) {
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (write(logfd, buf, n) != n)
		_exit(3);
}

static void fill(unsigned char *p, size_t n, unsigned seed) {
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		p[i] = seed >> 16;
	}
}

int main(int argc, char **argv) {
	if (argc < 2) {
		fprintf(stderr, "usage: counter LOGFILE\n");
		return 2;
	}
	logfd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (logfd < 0)
		return 1;

	// brk heap
	unsigned char *small = malloc(64 << 10);
	fill(small, 64 << 10, 1);
	// mmap'd malloc, touched sparsely: untouched pages must stay absent
	unsigned char *big = malloc(16 << 20);
	for (size_t i = 0; i < (16 << 20); i += 3 * 4096)
		big[i] = (unsigned char)i | 1;
	// protections
	unsigned char *ro = mmap(NULL, 8 << 12, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	fill(ro, 8 << 12, 2);
	mprotect(ro, 8 << 12, PROT_READ);
	unsigned char *none = mmap(NULL, 4 << 12, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	fill(none, 4 << 12, 3);
	mprotect(none, 4 << 12, PROT_NONE);
	unsigned char *rwx = mmap(NULL, 2 << 12, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	fill(rwx, 2 << 12, 4);
	// a private mapping of our own binary with one page changed
	int self = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	unsigned char *priv = mmap(NULL, 4 << 12, PROT_READ | PROT_WRITE, MAP_PRIVATE, self, 0);
	close(self);
	if (priv != MAP_FAILED)
		priv[4096 + 17] ^= 0x5a;

	struct sigaction sa = {0};
	sa.sa_flags = SA_RESTART;
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_usr2;
	sigaction(SIGUSR2, &sa, NULL);
	if (argc > 2 && strcmp(argv[2], "catch") == 0) {
		sa.sa_handler = on_other;
		sigaction(SIGURG, &sa, NULL);
		sigaction(SIGWINCH, &sa, NULL);
		sigaction(SIGCHLD, &sa, NULL);
	}

	// The kernel rewrites the rseq area with the current CPU on every
	// return to user mode; tests leave it out of memory hashes.
	logf_("rseq %p %u\n", (void *)((char *)__builtin_thread_pointer() + __rseq_offset), __rseq_size);
	logf_("ready %d %p\n", getpid(), (void *)&counter);
	for (;;) {
		counter++;
		logf_("count %lu\n", counter);
		if (caught)
			logf_("caught %d\n", (int)caught);
		struct timespec ts = {0, 10 * 1000 * 1000};
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
		if (want_brk) {
			want_brk = 0;
			void *a = sbrk(0);
			void *b = sbrk(1 << 20);
			memset(b, 7, 1 << 20);
			void *c = sbrk(0);
			logf_("brk %p %p %p\n", a, b, c);
		}
		if (want_cpu) {
			want_cpu = 0;
			long n = sysconf(_SC_NPROCESSORS_ONLN);
			for (int cpu = 0; cpu < n; cpu++) {
				cpu_set_t set;
				CPU_ZERO(&set);
				CPU_SET(cpu, &set);
				if (sched_setaffinity(0, sizeof set, &set) < 0)
					continue;
				sched_yield();
				logf_("cpu %d %d\n", cpu, sched_getcpu());
			}
			logf_("cpu done\n");
		}
	}
}
