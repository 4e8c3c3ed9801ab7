// shmem: shared memory between a parent and its child.
//
// usage: shmem LOGFILE
//
// The parent maps, before it forks, 16 KiB of MAP_SHARED|MAP_ANONYMOUS
// memory (A), a memfd it keeps open at fd 5 (B, 8 KiB) and a memfd it
// closes after mapping it (C, 8 KiB, a MAP_SHARED mapping, and a
// MAP_PRIVATE one, P, written by the parent), then forks. The child
// writes "child-1" at A+4096 and "child-b" at B; the parent writes
// "parent-1" at A and "parent-c" at C. Both log "ready PID" and wait.
//
// On SIGUSR1 the child writes "child-2" at A+8192, "child-b2" at B+4096
// and "child-c2" at C+4096 and logs "child wrote". On SIGUSR1 the parent
// logs "parent a=<A> <A+4096> <A+8192> b=<B> <B+4096> c=<C> <C+4096>
// p=<P> fd=<first bytes read through fd 5>".
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }

static char *memfd_map(const char *name, int keep, int flags) {
	int fd = memfd_create(name, MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, 8192) < 0)
		return MAP_FAILED;
	char *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, flags, fd, 0);
	if (keep >= 0)
		dup2(fd, keep);
	close(fd);
	return p;
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int log = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	char *a = mmap(NULL, 16384, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	char *b = memfd_map("shm-open", 5, MAP_SHARED);
	int cfd = memfd_create("shm-closed", MFD_CLOEXEC);
	if (cfd < 0 || ftruncate(cfd, 8192) < 0)
		return 1;
	char *c = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, cfd, 0);
	char *pv = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE, cfd, 0);
	close(cfd);
	if (log < 0 || a == MAP_FAILED || b == MAP_FAILED || c == MAP_FAILED || pv == MAP_FAILED)
		return 1;
	signal(SIGUSR1, on_usr1);
	sigset_t blk, old;
	sigemptyset(&blk);
	sigaddset(&blk, SIGUSR1);
	sigprocmask(SIG_BLOCK, &blk, &old);
	strcpy(c, "parent-c");
	pid_t kid = fork();
	if (kid < 0)
		return 1;
	if (kid == 0) {
		strcpy(a + 4096, "child-1");
		strcpy(b, "child-b");
		dprintf(log, "ready %d\n", getpid());
		for (;;) {
			sigsuspend(&old);
			if (go) {
				go = 0;
				strcpy(a + 8192, "child-2");
				strcpy(b + 4096, "child-b2");
				strcpy(c + 4096, "child-c2");
				dprintf(log, "child wrote\n");
			}
		}
	}
	strcpy(a, "parent-1");
	strcpy(pv, "private-p");
	dprintf(log, "ready %d\n", getpid());
	for (;;) {
		sigsuspend(&old);
		if (go) {
			go = 0;
			char fdb[16] = {0};
			pread(5, fdb, 8, 0);
			dprintf(log, "parent a=%s %s %s b=%s %s c=%s %s p=%s fd=%s\n", a, a + 4096, a + 8192, b, b + 4096, c, c + 4096, pv, fdb);
		}
	}
}
