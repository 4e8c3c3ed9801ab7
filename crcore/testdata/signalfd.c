// signalfd: SIGUSR2 and SIGRTMIN+1 blocked and read through a signalfd;
// after SIGUSR1 waits for SIGUSR2 on it.
//
// usage: signalfd LOGFILE
#include "fdtest.h"
#include <poll.h>
#include <sys/signalfd.h>

static const char *const keys[] = {"sigmask", NULL};

int main(int argc, char **argv) {
	fdtest_init(argc, argv);
	sigset_t m;
	sigemptyset(&m);
	sigaddset(&m, SIGUSR2);
	sigaddset(&m, SIGRTMIN + 1);
	sigprocmask(SIG_BLOCK, &m, NULL);
	// Stay blocked while waiting for SIGUSR1 too.
	sigaddset(&waitmask, SIGUSR2);
	sigaddset(&waitmask, SIGRTMIN + 1);
	int s = signalfd(-1, &m, SFD_NONBLOCK | SFD_CLOEXEC);
	if (s < 0)
		die("signalfd");
	fd_flags("before", s);
	fdinfo_lines("before", s, keys);
	logf_("ready");
	wait_go();
	fd_flags("after", s);
	fdinfo_lines("after", s, keys);
	struct pollfd pf = {.fd = s, .events = POLLIN};
	if (poll(&pf, 1, 5000) != 1)
		die("poll signalfd");
	struct signalfd_siginfo si;
	if (read(s, &si, sizeof si) != sizeof si)
		die("read signalfd");
	logf_("signal %u", si.ssi_signo);
	logf_("done");
	return 0;
}
