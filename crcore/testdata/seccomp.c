// seccomp: filters come back per thread, the scratch area's removal
// notwithstanding (filter A kills the process on munmap). usage:
// seccomp LOGFILE sync|split. sync: both threads share filter A
// (TSYNC); after the restore a TSYNC filter C must still succeed.
// split: the worker adds filter B (getsid -> EINVAL) for itself.
#include "fdtest.h"
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>

static volatile int phase;
static volatile pid_t worker_tid;
static int split;

static int install(int nr, unsigned ret, unsigned flags) {
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, ret),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog p = {4, f};
	return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &p);
}

static void state(const char *tag, const char *who) {
	char buf[8192], path[64];
	snprintf(path, sizeof path, "/proc/thread-self/status");
	int f = open(path, O_RDONLY | O_CLOEXEC);
	int n = read(f, buf, sizeof buf - 1);
	close(f);
	buf[n > 0 ? n : 0] = 0;
	char *a = strstr(buf, "Seccomp:"), *b = strstr(buf, "Seccomp_filters:");
	int mode = a ? atoi(a + 8) : -1, nf = b ? atoi(b + 16) : -1;
	errno = 0;
	long pp = syscall(SYS_getppid);
	int e1 = pp < 0 ? errno : 0;
	errno = 0;
	long sid = syscall(SYS_getsid, 0);
	int e2 = sid < 0 ? errno : 0;
	errno = 0;
	long pg = syscall(SYS_getpgid, 0);
	int e3 = pg < 0 ? errno : 0;
	logf_("%s %s mode %d filters %d getppid %d getsid %d getpgid %d", tag, who, mode, nf, e1, e2, e3);
}

static void *worker(void *arg) {
	(void)arg;
	worker_tid = syscall(SYS_gettid);
	struct timespec ms = {0, 1000000};
	while (phase < 1)
		nanosleep(&ms, NULL);
	if (split && install(SYS_getsid, SECCOMP_RET_ERRNO | EINVAL, 0))
		die("install B");
	state("before", "worker");
	phase = 2;
	while (phase < 3)
		nanosleep(&ms, NULL);
	state("after", "worker");
	phase = 4;
	for (;;)
		nanosleep(&ms, NULL);
}

int main(int argc, char **argv) {
	fdtest_init(argc, argv);
	split = argc > 2 && !strcmp(argv[2], "split");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		die("nnp");
	pthread_t th;
	if (pthread_create(&th, NULL, worker, NULL))
		die("pthread_create");
	while (!worker_tid)
		sched_yield();
	if (install(SYS_getppid, SECCOMP_RET_ERRNO | EPERM, SECCOMP_FILTER_FLAG_TSYNC))
		die("install A getppid");
	if (install(SYS_munmap, SECCOMP_RET_KILL_PROCESS, SECCOMP_FILTER_FLAG_TSYNC))
		die("install A munmap");
	phase = 1;
	struct timespec ms = {0, 1000000};
	while (phase < 2)
		nanosleep(&ms, NULL);
	state("before", "main");
	logf_("ready");
	wait_go();
	state("after", "main");
	phase = 3;
	while (phase < 4)
		nanosleep(&ms, NULL);
	if (!split) {
		long r = install(SYS_getpgid, SECCOMP_RET_ERRNO | EACCES, SECCOMP_FILTER_FLAG_TSYNC);
		logf_("tsync %ld", r);
		state("synced", "main");
	}
	logf_("done");
	return 0;
}
