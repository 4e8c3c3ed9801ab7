// shapefuzz: a tree of processes shaped by a script, for the random
// shape test.
//
// usage: shapefuzz LOGFILE SCRIPT
//
// SCRIPT is a list of operations separated by spaces, run one after the
// other, each by the process it names (a logical id, 0 the root):
//
//	Fa,b   a forks b
//	Pa,b   a clones b with CLONE_PARENT (b is a's sibling)
//	Ca,b   a clones b with CLONE_FILES
//	Ka,b   a clones b with CLONE_FS
//	Ha,b   a clones b with CLONE_PARENT and CLONE_FILES
//	Sa     a calls setsid
//	Ga     a calls setpgid(0, 0)
//	Ja,b   a joins b's process group (setpgid(0, getpgid(b)))
//	Xa     a exits
//	Ra     a reaps its exited children
//	Ua,v   a sets its child subreaper flag to v
//	Da     a unshares its fd table
//	Ea     a unshares its fs info
//	Oa     a opens /dev/null
//	Qa     a opens a pipe, its read end at fd 4, and its write end
//	       open at another fd
//	Wa,v   a moves to /, /usr, /etc or /tmp (v 0-3), with umask 022,
//	       027, 077 or 002 (its fs info, shared or not)
//	Ta     a starts a thread (it only sleeps)
//	Ya     a starts a thread that unshares its fd table and fs info
//
// Failed calls are ignored: the shape is what the kernel made. The
// processes take turns through a shared page, which also holds a
// counter each: once the script is done, every live process bumps its
// counter every 10 ms. The root logs "pid ID PID" for every process
// still alive, "page ADDR" (the counters' address, as 64-bit words by
// id) and "done".
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAXP 32
#define MAXOPS 256

struct shared {
	volatile unsigned long count[MAXP]; // first: the test reads them
	volatile int pc;
	volatile int alive[MAXP];
	volatile pid_t pid[MAXP];
	volatile int unshared; // threads of op Y done with their unshare
};

struct op {
	char kind;
	int a, b;
};

static struct shared *sh;
static struct op ops[MAXOPS];
static int nops, me, logfd;

static void nap(long ns) {
	struct timespec ts = {0, ns};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

// dead says whether pid is a zombie or gone.
static int dead(pid_t pid) {
	char path[64], buf[256];
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 1;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 1;
	buf[n] = 0;
	char *r = strrchr(buf, ')');
	return r && (r[2] == 'Z' || r[2] == 'X');
}

// settle waits until the processes that exited are dead (a zombie or
// reaped), their orphans reparented: an op, or the shape told at the
// end, sees what their exits did.
static void settle(void) {
	for (int i = 1; i < MAXP; i++) {
		while (sh->pid[i] && !sh->alive[i] && !dead(sh->pid[i]))
			nap(1000 * 1000);
	}
}

static void born(int id) {
	me = id;
	sh->pid[id] = getpid();
	sh->alive[id] = 1;
}

// spawn runs clone flags as fork does (no new stack: the child goes on
// from here on its copy) and makes the child b.
static void spawn(unsigned long flags, int b) {
	long r = syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, NULL);
	if (r == 0)
		born(b);
}

// A thread: raw clone on a stack of its own, sleeping with raw syscalls
// (no libc state of its own; a fork-like clone from another thread of
// the process copies only that thread).
static int sleeper(void *arg) {
	(void)arg;
	struct timespec ts = {1, 0};
	for (;;)
		syscall(SYS_nanosleep, &ts, NULL);
	return 0;
}

static int unsharer(void *arg) {
	syscall(SYS_unshare, CLONE_FILES | CLONE_FS);
	sh->unshared++;
	return sleeper(arg);
}

// thread starts a thread running fn, up to 8 a process; it says whether
// it did.
static int thread(int (*fn)(void *)) {
	static char stacks[8][64 << 10];
	static int used;
	if (used >= 8)
		return 0;
	return clone(fn, stacks[used++] + sizeof stacks[0],
		     CLONE_VM | CLONE_THREAD | CLONE_SIGHAND | CLONE_FS | CLONE_FILES | CLONE_SYSVSEM, NULL) > 0;
}

static void run(struct op *o) {
	switch (o->kind) {
	case 'F':
		spawn(0, o->b);
		break;
	case 'P':
		spawn(CLONE_PARENT, o->b);
		break;
	case 'C':
		spawn(CLONE_FILES, o->b);
		break;
	case 'K':
		spawn(CLONE_FS, o->b);
		break;
	case 'H':
		spawn(CLONE_PARENT | CLONE_FILES, o->b);
		break;
	case 'E':
		unshare(CLONE_FS);
		break;
	case 'S':
		setsid();
		break;
	case 'G':
		setpgid(0, 0);
		break;
	case 'J':
		if (sh->alive[o->b])
			setpgid(0, getpgid(sh->pid[o->b]));
		break;
	case 'X':
		sh->alive[me] = 0;
		sh->pc++;
		_exit(0);
	case 'R':
		while (waitpid(-1, NULL, WNOHANG | __WALL) > 0)
			;
		break;
	case 'U':
		prctl(PR_SET_CHILD_SUBREAPER, o->b, 0, 0, 0);
		break;
	case 'D':
		unshare(CLONE_FILES);
		break;
	case 'O':
		open("/dev/null", O_RDONLY);
		break;
	case 'Q': {
		int p[2];
		if (pipe(p) == 0) {
			dup2(p[0], 4); // 3 is the log's
			close(p[0]);
		}
		break;
	}
	case 'W': {
		static const char *dirs[] = {"/", "/usr", "/etc", "/tmp"};
		static const mode_t masks[] = {022, 027, 077, 002};
		if (chdir(dirs[o->b & 3]) == 0)
			umask(masks[o->b & 3]);
		break;
	}
	case 'T':
		thread(sleeper);
		break;
	case 'Y': {
		int n = sh->unshared;
		if (thread(unsharer))
			while (sh->unshared == n) // its unshare done before the next op
				nap(1000 * 1000);
		break;
	}
	}
}

int main(int argc, char **argv) {
	if (argc < 3)
		return 2;
	logfd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (logfd < 0)
		return 1;
	for (char *s = strtok(argv[2], " "); s && nops < MAXOPS; s = strtok(NULL, " ")) {
		struct op *o = &ops[nops++];
		o->kind = s[0];
		o->b = 0;
		if (sscanf(s + 1, "%d,%d", &o->a, &o->b) < 1 || o->a < 0 || o->a >= MAXP || o->b < 0 || o->b >= MAXP)
			return 2;
	}
	sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		return 1;
	signal(SIGCHLD, SIG_DFL);
	born(0);
	for (;;) {
		int pc = sh->pc;
		if (pc >= nops)
			break;
		if (ops[pc].a != me) {
			nap(100 * 1000);
			continue;
		}
		settle();
		run(&ops[pc]);
		// The parent and a new child both come back here: the
		// one the op named moves on.
		if (ops[pc].a == me)
			sh->pc = pc + 1;
	}
	if (me == 0) {
		settle();
		for (int i = 0; i < MAXP; i++)
			if (sh->alive[i])
				dprintf(logfd, "pid %d %d\n", i, sh->pid[i]);
		dprintf(logfd, "page %p\n", (void *)sh);
		dprintf(logfd, "done\n");
	}
	for (;;) {
		sh->count[me]++;
		nap(10 * 1000 * 1000);
	}
}
