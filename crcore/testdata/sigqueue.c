// sigqueue: pending signals survive a restore with their siginfo. Every
// thread blocks SIGRTMIN..SIGRTMIN+2, SIGUSR1 and SIGCHLD; a child exits
// at once (a kernel-made SIGCHLD stays pending). The test queues signals
// meanwhile. After SIGUSR2 the main thread unblocks the real-time signals
// and SIGCHLD, the worker SIGUSR1; each handler logs what it got.
//
// usage: sigqueue LOGFILE
#include "fdtest.h"
#include <pthread.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

static volatile pid_t worker_tid;
static volatile sig_atomic_t go2, worker_done;

static void on_sig(int sig, siginfo_t *si, void *uc) {
	(void)uc;
	pid_t tid = syscall(SYS_gettid);
	if (sig == SIGCHLD)
		logf_("sig %d code %d pid %d uid %d status %d in %s", sig, si->si_code, si->si_pid, si->si_uid,
		      si->si_status, tid == worker_tid ? "worker" : "main");
	else
		logf_("sig %d code %d pid %d uid %d value %d in %s", sig, si->si_code, si->si_pid, si->si_uid,
		      si->si_value.sival_int, tid == worker_tid ? "worker" : "main");
}

static void on_usr2(int sig) { (void)sig; go2 = 1; }

static void *worker(void *arg) {
	(void)arg;
	worker_tid = syscall(SYS_gettid);
	struct timespec ms = {0, 1000000};
	while (!go2)
		nanosleep(&ms, NULL);
	sigset_t u;
	sigemptyset(&u);
	sigaddset(&u, SIGUSR1);
	pthread_sigmask(SIG_UNBLOCK, &u, NULL);
	worker_done = 1;
	return NULL;
}

int main(int argc, char **argv) {
	fdtest_init(argc, argv);
	sigset_t rt, all;
	sigemptyset(&rt);
	for (int s = SIGRTMIN; s <= SIGRTMIN + 2; s++)
		sigaddset(&rt, s);
	sigaddset(&rt, SIGCHLD);
	all = rt;
	sigaddset(&all, SIGUSR1);
	sigaddset(&all, SIGUSR2);
	sigprocmask(SIG_BLOCK, &all, NULL);
	// Each handler runs to its end before the next signal is taken, so
	// the log shows the order of delivery.
	struct sigaction sa = {.sa_sigaction = on_sig, .sa_flags = SA_SIGINFO, .sa_mask = all};
	for (int s = SIGRTMIN; s <= SIGRTMIN + 2; s++)
		sigaction(s, &sa, NULL);
	sigaction(SIGCHLD, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	struct sigaction sg = {.sa_handler = on_usr2};
	sigaction(SIGUSR2, &sg, NULL);
	pid_t c = fork();
	if (c < 0)
		die("fork");
	if (c == 0)
		_exit(7);
	siginfo_t wi;
	if (waitid(P_PID, c, &wi, WEXITED | WNOWAIT) < 0)
		die("waitid");
	pthread_t th;
	if (pthread_create(&th, NULL, worker, NULL))
		die("pthread_create");
	while (!worker_tid)
		sched_yield();
	logf_("child %d", c);
	logf_("ready worker=%d", worker_tid);
	sigset_t w;
	sigfillset(&w);
	sigdelset(&w, SIGUSR2);
	while (!go2)
		sigsuspend(&w);
	logf_("go");
	sigprocmask(SIG_UNBLOCK, &rt, NULL);
	pthread_join(th, NULL);
	logf_("done");
	return 0;
}
