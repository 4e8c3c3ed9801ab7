// creds: a process that dropped root - other uids, gids and groups,
// capabilities in every set (ambient too, a bounding set without
// CAP_SYS_MODULE), securebits - with no_new_privs, a parent-death signal,
// child subreaper, dumpable and lowered rlimits keeps them all after a
// restore, and they act: binding port 80 works, becoming root does not.
//
// usage: creds LOGFILE
#include "fdtest.h"
#include <grp.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#define B(c) (1u << (c))

static void capset_(unsigned eff, unsigned prm, unsigned inh) {
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2] = {{eff, prm, inh}, {0, 0, 0}};
	if (syscall(SYS_capset, &h, d))
		die("capset");
}

static void state(const char *tag) {
	char buf[8192];
	int f = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	int n = read(f, buf, sizeof buf - 1);
	close(f);
	buf[n > 0 ? n : 0] = 0;
	for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n"))
		if (!strncmp(l, "Uid", 3) || !strncmp(l, "Gid", 3) || !strncmp(l, "Groups", 6) || !strncmp(l, "Cap", 3) ||
		    !strncmp(l, "NoNewPrivs", 10))
			logf_("%s %s", tag, l);
	int pd = 0, sr = 0;
	prctl(PR_GET_PDEATHSIG, &pd);
	prctl(PR_GET_CHILD_SUBREAPER, &sr);
	logf_("%s securebits %#x pdeathsig %d subreaper %d dumpable %d", tag, prctl(PR_GET_SECUREBITS), pd, sr,
	      prctl(PR_GET_DUMPABLE));
	struct rlimit r;
	getrlimit(RLIMIT_NOFILE, &r);
	logf_("%s nofile %lu %lu", tag, r.rlim_cur, r.rlim_max);
	getrlimit(RLIMIT_CORE, &r);
	logf_("%s core %lu %lu", tag, r.rlim_cur, r.rlim_max);
	getrlimit(RLIMIT_MSGQUEUE, &r);
	logf_("%s msgqueue %lu %lu", tag, r.rlim_cur, r.rlim_max);
}

int main(int argc, char **argv) {
	fdtest_init(argc, argv);
	struct rlimit r = {512, 1024};
	if (setrlimit(RLIMIT_NOFILE, &r))
		die("rlimit nofile");
	r.rlim_cur = r.rlim_max = 0;
	setrlimit(RLIMIT_CORE, &r);
	r.rlim_cur = 4096, r.rlim_max = 8192;
	setrlimit(RLIMIT_MSGQUEUE, &r);
	gid_t g[] = {5, 6, 7};
	if (setgroups(3, g))
		die("setgroups");
	if (setresgid(1001, 1002, 1003))
		die("setresgid");
	if (prctl(PR_CAPBSET_DROP, CAP_SYS_MODULE))
		die("bset drop");
	if (prctl(PR_SET_SECUREBITS, SECBIT_KEEP_CAPS))
		die("securebits");
	if (setresuid(1001, 1002, 1003))
		die("setresuid");
	capset_(B(CAP_SETPCAP) | B(CAP_KILL) | B(CAP_NET_BIND_SERVICE), B(CAP_SETPCAP) | B(CAP_KILL) | B(CAP_NET_BIND_SERVICE),
		B(CAP_KILL));
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_KILL, 0, 0))
		die("ambient");
	if (prctl(PR_SET_SECUREBITS, SECBIT_KEEP_CAPS | SECBIT_NO_CAP_AMBIENT_RAISE))
		die("securebits 2");
	capset_(B(CAP_NET_BIND_SERVICE), B(CAP_KILL) | B(CAP_NET_BIND_SERVICE), B(CAP_KILL));
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		die("nnp");
	prctl(PR_SET_PDEATHSIG, SIGWINCH);
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	prctl(PR_SET_DUMPABLE, 1);
	state("before");
	logf_("ready");
	wait_go();
	state("after");
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(80), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int one = 1;
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	logf_("bind80 %d", bind(s, (struct sockaddr *)&a, sizeof a) == 0 ? 0 : errno);
	close(s);
	logf_("setuid0 %d", setuid(0) == 0 ? 0 : errno);
	logf_("done");
	return 0;
}
