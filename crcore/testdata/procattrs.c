// procattrs: oom_score_adj and the audit login uid come back.
//
// usage: procattrs LOGFILE ADJ LOGINUID
//
// Sets its oom_score_adj to ADJ and its login uid to LOGINUID (the
// thread's own, inherited by the worker thread it starts next), logs
// "ready", and after SIGUSR1 logs what each thread reads back.
#include "fdtest.h"
#include <pthread.h>

static void put(const char *path, const char *val) {
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		die(path);
	if (write(fd, val, strlen(val)) != (ssize_t)strlen(val))
		die(path);
	close(fd);
}

static long get(const char *path) {
	char buf[64];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die(path);
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		die(path);
	buf[n] = 0;
	return strtol(buf, NULL, 10);
}

static volatile int phase;

static void *worker(void *arg) {
	(void)arg;
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	while (phase < 1)
		usleep(1000);
	logf_("worker loginuid %ld", get("/proc/thread-self/loginuid"));
	phase = 2;
	for (;;)
		sigsuspend(&all);
	return NULL;
}

int main(int argc, char **argv) {
	fdtest_init(argc, argv);
	if (argc < 4)
		exit(2);
	put("/proc/self/oom_score_adj", argv[2]);
	put("/proc/self/loginuid", argv[3]);
	pthread_t th;
	if (pthread_create(&th, NULL, worker, NULL))
		die("pthread_create");
	logf_("ready");
	wait_go();
	logf_("main oom_score_adj %ld loginuid %ld", get("/proc/self/oom_score_adj"), get("/proc/thread-self/loginuid"));
	phase = 1;
	while (phase < 2)
		usleep(1000);
	logf_("done");
	return 0;
}
