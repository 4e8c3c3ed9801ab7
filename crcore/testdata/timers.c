// timers: POSIX timers on several clocks, with sparse ids, a thread
// target and intervals, and an ITIMER_REAL with interval, keep running
// after a restore with the time that remained.
//
// usage: timers LOGFILE
#include "fdtest.h"
#include <pthread.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>

static volatile pid_t worker_tid;
static volatile int alarms, fires, bad_fires;

static void on_alrm(int sig) { (void)sig; alarms++; }
static void on_timer(int sig, siginfo_t *si, void *uc) {
	(void)sig;
	(void)uc;
	if (syscall(SYS_gettid) == worker_tid && si->si_value.sival_int == 0x200 && si->si_code == SI_TIMER)
		fires++;
	else
		bad_fires++;
}

static void *worker(void *arg) {
	(void)arg;
	worker_tid = syscall(SYS_gettid);
	sigset_t u;
	sigemptyset(&u);
	sigaddset(&u, SIGRTMIN + 4);
	pthread_sigmask(SIG_UNBLOCK, &u, NULL);
	for (;;)
		pause();
	return NULL;
}

static timer_t ids[7];

static void mk(int i, clockid_t clk, int notify, int sig, int val, long vsec, long vnsec, long isec, long insec) {
	struct sigevent se = {.sigev_notify = notify, .sigev_signo = sig};
	se.sigev_value.sival_int = val;
	if (notify == SIGEV_THREAD_ID)
		se._sigev_un._tid = worker_tid;
	if (timer_create(clk, &se, &ids[i]))
		die("timer_create");
	struct itimerspec its = {{isec, insec}, {vsec, vnsec}};
	if (timer_settime(ids[i], 0, &its, NULL))
		die("timer_settime");
}

static void state(const char *tag) {
	for (int i = 0; i < 7; i++) {
		struct itimerspec its;
		if (syscall(SYS_timer_gettime, (long)i, &its)) {
			logf_("%s timer %d errno %d", tag, i, errno);
			continue;
		}
		logf_("%s timer %d interval %ld.%09ld armed %d", tag, i, its.it_interval.tv_sec, its.it_interval.tv_nsec,
		      its.it_value.tv_sec || its.it_value.tv_nsec);
		logf_("%s remain %d %ld", tag, i, its.it_value.tv_sec);
	}
	struct itimerval iv;
	getitimer(ITIMER_REAL, &iv);
	logf_("%s itimer interval %ld.%06ld", tag, iv.it_interval.tv_sec, iv.it_interval.tv_usec);
	char buf[4096];
	int f = open("/proc/self/timers", O_RDONLY | O_CLOEXEC);
	int n = read(f, buf, sizeof buf - 1);
	close(f);
	buf[n > 0 ? n : 0] = 0;
	for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n"))
		logf_("%s proc %s", tag, l);
}

int main(int argc, char **argv) {
	fdtest_init(argc, argv);
	sigset_t b;
	sigemptyset(&b);
	sigaddset(&b, SIGRTMIN + 3);
	sigaddset(&b, SIGRTMIN + 4);
	sigaddset(&b, SIGRTMIN + 5);
	sigprocmask(SIG_BLOCK, &b, NULL);
	struct sigaction st = {.sa_sigaction = on_timer, .sa_flags = SA_SIGINFO | SA_RESTART};
	sigaction(SIGRTMIN + 4, &st, NULL);
	pthread_t th;
	if (pthread_create(&th, NULL, worker, NULL))
		die("pthread_create");
	while (!worker_tid)
		sched_yield();
	mk(0, CLOCK_REALTIME, SIGEV_SIGNAL, SIGRTMIN + 3, 0x100, 1000, 0, 0, 0);
	mk(1, CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGRTMIN + 3, 0, 0, 0, 0, 0);
	mk(2, CLOCK_MONOTONIC, SIGEV_THREAD_ID, SIGRTMIN + 4, 0x200, 0, 20000000, 0, 20000000);
	mk(3, CLOCK_BOOTTIME, SIGEV_NONE, 0, 0, 500, 0, 7, 0);
	mk(4, CLOCK_PROCESS_CPUTIME_ID, SIGEV_SIGNAL, SIGRTMIN + 5, 0x400, 100, 0, 0, 0);
	mk(5, CLOCK_BOOTTIME, SIGEV_SIGNAL, SIGRTMIN + 3, 0, 0, 0, 0, 0);
	mk(6, CLOCK_THREAD_CPUTIME_ID, SIGEV_SIGNAL, SIGRTMIN + 5, 0x600, 200, 0, 1, 0);
	timer_delete(ids[1]);
	timer_delete(ids[5]);
	struct sigaction sa = {.sa_handler = on_alrm, .sa_flags = SA_RESTART};
	sigaction(SIGALRM, &sa, NULL);
	struct itimerval iv = {{0, 50000}, {0, 50000}};
	setitimer(ITIMER_REAL, &iv, NULL);
	state("before");
	logf_("ready");
	wait_go();
	state("after");
	int a0 = alarms, f0 = fires;
	for (int i = 0; i < 400 && (alarms < a0 + 3 || fires < f0 + 3); i++)
		usleep(5000);
	logf_("alarms %d fires %d bad %d", alarms >= a0 + 3, fires >= f0 + 3, bad_fires);
	logf_("done");
	return 0;
}
