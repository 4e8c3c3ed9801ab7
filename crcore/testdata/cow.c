// cow: a parent and a forked child sharing most of a region copy-on-write.
//
// usage: cow LOGFILE [chain]
//
// Maps REGION bytes of private anonymous memory and fills it (seed 1),
// then forks. The child overwrites the first MiB (seed 2) and drops the
// third (MADV_DONTNEED: zeros); the parent overwrites the fifth MiB
// (seed 3). With "chain", the child then forks a grandchild, which
// overwrites the seventh MiB (seed 4). The other pages stay shared. Each
// prints "NAME ready PID ADDR", then waits in sigsuspend; on SIGUSR1 it
// checks every byte of the region against what it should hold and prints
// "NAME ok" or "NAME bad at OFF".
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MIB (1u << 20)
#define REGION (16 * MIB)

static volatile sig_atomic_t want;
static void on_usr1(int s) { (void)s; want = 1; }

static unsigned char at(size_t i, unsigned seed) {
	unsigned x = (unsigned)i * 2654435761u + seed * 40503u;
	x ^= x >> 13;
	return (unsigned char)(x * 0x5bd1e995u >> 24);
}

static void fill(unsigned char *p, size_t from, size_t to, unsigned seed) {
	for (size_t i = from; i < to; i++)
		p[i] = at(i, seed);
}

// want_at: role 0 is the parent, 1 the child, 2 the grandchild.
static unsigned char want_at(int role, size_t i) {
	if (role >= 1 && i < MIB)
		return at(i, 2);
	if (role >= 1 && i >= 2 * MIB && i < 3 * MIB)
		return 0;
	if (role == 0 && i >= 4 * MIB && i < 5 * MIB)
		return at(i, 3);
	if (role == 2 && i >= 6 * MIB && i < 7 * MIB)
		return at(i, 4);
	return at(i, 1);
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int log = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (log < 0)
		return 1;
	unsigned char *p = mmap(NULL, REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return 1;
	fill(p, 0, REGION, 1);
	sigset_t block, old;
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	sigprocmask(SIG_BLOCK, &block, &old);
	struct sigaction sa = {.sa_handler = on_usr1};
	sigaction(SIGUSR1, &sa, NULL);
	pid_t pid = fork();
	if (pid < 0)
		return 1;
	int role = pid == 0;
	if (role == 1) {
		fill(p, 0, MIB, 2);
		madvise(p + 2 * MIB, MIB, MADV_DONTNEED);
		if (argc > 2 && strcmp(argv[2], "chain") == 0) {
			pid = fork();
			if (pid < 0)
				return 1;
			if (pid == 0) {
				role = 2;
				fill(p, 6 * MIB, 7 * MIB, 4);
			}
		}
	} else {
		fill(p, 4 * MIB, 5 * MIB, 3);
	}
	const char *name = role == 0 ? "parent" : role == 1 ? "child" : "grandchild";
	dprintf(log, "%s ready %d %lx\n", name, getpid(), (unsigned long)p);
	for (;;) {
		while (!want)
			sigsuspend(&old);
		want = 0;
		size_t bad = REGION;
		for (size_t i = 0; i < REGION; i++)
			if (p[i] != want_at(role, i)) {
				bad = i;
				break;
			}
		if (bad == REGION)
			dprintf(log, "%s ok\n", name);
		else
			dprintf(log, "%s bad at %zu\n", name, bad);
	}
}
