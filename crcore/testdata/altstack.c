// altstack: a SA_SIGINFO|SA_ONSTACK|SA_NODEFER handler runs on the
// alternate signal stack, nested, after a restore.
//
// usage: altstack LOGFILE
#include "fdtest.h"
#include <stdint.h>

static char altbuf[1 << 16] __attribute__((aligned(16)));
static volatile int depth;

static void on_usr2(int sig, siginfo_t *si, void *uc) {
	(void)uc;
	char here;
	int d = ++depth;
	int on = (uintptr_t)&here >= (uintptr_t)altbuf && (uintptr_t)&here < (uintptr_t)altbuf + sizeof altbuf;
	stack_t cur;
	sigaltstack(NULL, &cur);
	logf_("handler depth %d onstack %d ss_flags %d code %d", d, on, cur.ss_flags, si->si_code);
	if (d == 1)
		raise(sig); // SA_NODEFER: delivered here, nested
}

static void state(const char *tag) {
	struct sigaction sa;
	sigaction(SIGUSR2, NULL, &sa);
	stack_t ss;
	sigaltstack(NULL, &ss);
	logf_("%s flags %#x handler %d ss %d size %zu flags %d", tag, sa.sa_flags & (SA_SIGINFO | SA_ONSTACK | SA_NODEFER),
	      sa.sa_sigaction == on_usr2, ss.ss_sp == altbuf, ss.ss_size, ss.ss_flags);
}

int main(int argc, char **argv) {
	fdtest_init(argc, argv);
	stack_t ss = {.ss_sp = altbuf, .ss_size = sizeof altbuf};
	if (sigaltstack(&ss, NULL))
		die("sigaltstack");
	struct sigaction sa = {.sa_sigaction = on_usr2, .sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER};
	sigaction(SIGUSR2, &sa, NULL);
	state("before");
	logf_("ready");
	wait_go();
	state("after");
	raise(SIGUSR2);
	logf_("done");
	return 0;
}
