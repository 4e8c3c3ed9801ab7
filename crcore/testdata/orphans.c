// orphans: sessions and process groups whose leaders have exited.
//
// usage: orphans LOGFILE [alive-leader]
//
// The root starts a session of its own and becomes a child subreaper.
// It forks A, which starts a session, makes a pipe and forks B (B leads
// a process group of its own) and C (C stays in A's group); A exits, and
// B and C, orphans, are reparented to the root, in session A. B writes
// tokens into the pipe, C reads and logs them. The root also forks D,
// which leads a group of its own in the root's session and forks E
// (E stays in D's group); D exits, and E, an orphan in group D, counts.
// The root reaps A and D, logs "ready" and waits in sigsuspend; it logs
// "root sigchld" for each SIGCHLD it gets (none after a restore).
//
// alive-leader: the root forks X, X forks L, which starts a session and
// forks K, which forks M and exits: M, an orphan of the root, is in
// session L, whose leader lives on elsewhere in the tree. Logs "M
// started PID" and "ready".
//
// split: one session's orphans under two parents. The root forks P (no
// subreaper), P forks L, which starts a session, forks A and clones B
// with CLONE_PARENT (B is P's child), logs "split P A B L" and exits;
// P reaps it and A is reparented to the root. A and B log "A count N"
// and "B count N"; P logs "ready" once L is reaped.
//
// unflagged: an orphan of a live leader whose parent is no subreaper
// now. The root forks G, a child subreaper, which forks X, which forks
// L; L starts a session and forks K, which forks M and exits: M goes to
// G. Then G drops its subreaper flag and logs "unflagged G M L" and
// "ready"; M logs "M count N"; on SIGUSR2 G logs "G subreaper FLAG".
//
// presetsid: a child born before its parent left the session. The root
// forks P, which forks C and then starts a session of its own: C, P's
// child, stays in the root's session (and group). Logs "presetsid P C"
// and "ready"; P and C log "P count N" and "C count N".
//
// chain, chain-outside: leaders born in the session above. The root
// forks A, A forks B, B forks C; then B and A start sessions of their
// own: C is in the root's session under B, B's parent A is not in it.
// With chain-outside the root does not start a session of its own, and
// C is in the session the root was started in. Logs "chain A B C" and
// "ready"; A, B and C log "A count N" and so on.
//
// gonepre: an exited leader's members under leaders born in its
// session. The root forks L, which starts a session, forks Q1 and Q2
// and exits; each Q forks a child (C1, C2) and then starts a session of
// its own, so C1 and C2 are in session L under Q1 and Q2, children of
// the root. Logs "gonepre L Q1 C1 Q2 C2" and "ready"; they log "Q1
// count N", "C1 count N" and so on.
//
// sharedorphan: an orphan sharing its session leader's fd table. The
// root forks X, X forks L, which starts a session and clones K with
// CLONE_FILES; K clones M with CLONE_FILES and exits. M, in session L,
// goes to the root and logs "sharedorphan M L", then counts ("M count
// N"); L logs "ready". sharedcousin: the same without L's setsid: M,
// in the root's session, shares an fd table only with L, on another
// branch.
//
// gonefiles: a member of an exited leader's session sharing its parent's
// fd table. The root forks P; P clones L with CLONE_FILES; L starts a
// session, clones B with CLONE_PARENT and CLONE_FILES (B is P's child
// and shares P's table), logs "gonefiles P B L" and exits. B counts ("B
// count N"); P logs "ready" once L is reaped.
//
// dropped: a child sharing its grandparent's fd table, which its
// parent dropped. The root forks A; A clones B with CLONE_FILES; B
// clones C with CLONE_FILES and unshares its table (CLONE_FILES). A then
// opens /dev/zero and B /dev/null, each in its table. Logs "dropped A B
// C" and "ready"; B and C count ("B count N", "C count N").
//
// zombieleader: an orphan of a session whose leader is a zombie. The
// root forks X, X forks L, which starts a session, forks K, which forks
// M and exits; L reaps K and exits, a zombie X leaves unreaped. M goes
// to the root and logs "zombieleader M L", then counts ("M count N").
//
// moved: as unflagged, but X is the subreaper M goes to, and once X has
// dropped its flag L's parent P exits: L goes to the root, and M's
// parent X is no ancestor of its session's leader L any more. Logs
// "moved X M L" and "ready".
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int logfd;

static void on_chld(int sig) {
	(void)sig;
	static const char msg[] = "root sigchld\n";
	if (write(logfd, msg, sizeof msg - 1) < 0)
		_exit(3);
}

static volatile sig_atomic_t usr1, usr2;
static void on_usr1(int sig) { (void)sig; usr1 = 1; }
static void on_usr2(int sig) { (void)sig; usr2 = 1; }

static void nap(void);

// idle naps for ever.
static void idle(void) {
	for (;;)
		nap();
}

static void count(const char *who) {
	for (unsigned long n = 1;; n++) {
		dprintf(logfd, "%s count %lu\n", who, n);
		nap();
	}
}

static int b_main(void *arg) {
	(void)arg;
	count("B");
	return 0;
}

// leader: L of unflagged and moved. Starts a session, forks K, which
// forks M and exits; M waits until reaper is its parent, tells it
// (SIGUSR1) and counts.
static void leader(pid_t reaper) {
	setsid();
	pid_t k = fork();
	if (k == 0) {
		if (fork() == 0) {
			while (getppid() != reaper)
				nap();
			kill(reaper, SIGUSR1);
			count("M");
		}
		_exit(0);
	}
	waitpid(k, NULL, 0);
	idle();
}

// shapes runs the modes split, unflagged and moved in the root.
static pid_t root_pid;

static int m_main(void *arg) {
	(void)arg;
	while (getppid() != root_pid)
		nap();
	dprintf(logfd, "sharedorphan %d %d\n", getpid(), getsid(0));
	count("M");
	return 0;
}

static int k_main(void *arg) {
	(void)arg;
	static char stack[64 << 10];
	if (clone(m_main, stack + sizeof stack, CLONE_FILES | SIGCHLD, NULL) < 0)
		_exit(1);
	_exit(0);
}

static void zombie_leader(void) {
	if (fork() == 0) { // X
		signal(SIGCHLD, SIG_DFL);
		if (fork() == 0) { // L
			setsid();
			pid_t k = fork();
			if (k == 0) {
				if (fork() == 0) { // M
					while (getppid() != root_pid)
						nap();
					dprintf(logfd, "zombieleader %d %d\n", getpid(), getsid(0));
					count("M");
				}
				_exit(0);
			}
			waitpid(k, NULL, 0);
			_exit(0);
		}
		idle();
	}
	idle();
}

static int gone_l_main(void *arg) {
	(void)arg;
	static char stack[64 << 10];
	setsid();
	pid_t b = clone(b_main, stack + sizeof stack, CLONE_PARENT | CLONE_FILES, NULL);
	if (b < 0)
		_exit(1);
	dprintf(logfd, "gonefiles %d %d %d\n", getppid(), b, getpid());
	_exit(0);
}

static int c_main(void *arg) {
	(void)arg;
	count("C");
	return 0;
}

static int dropped_b_main(void *arg) {
	int *ready = arg;
	static char stack[64 << 10];
	pid_t c = clone(c_main, stack + sizeof stack, CLONE_FILES | SIGCHLD, NULL);
	if (c < 0 || unshare(CLONE_FILES) < 0 || open("/dev/null", O_RDONLY) < 0)
		_exit(1);
	dprintf(logfd, "dropped %d %d %d\n", getppid(), getpid(), c);
	if (write(ready[1], "x", 1) != 1)
		_exit(1);
	count("B");
	return 0;
}

// files_child runs fn in a child sharing our fd table (CLONE_FILES) and
// waits for it to exit.
static void files_child(int (*fn)(void *)) {
	static char stack[64 << 10];
	pid_t c = clone(fn, stack + sizeof stack, CLONE_FILES | SIGCHLD, NULL);
	if (c < 0 || waitpid(c, NULL, 0) != c)
		_exit(1);
}

// presetsid forks a child that counts as who, then starts a session
// and returns the child's pid.
static pid_t presetsid(const char *who) {
	pid_t c = fork();
	if (c < 0)
		_exit(1);
	if (c == 0)
		count(who);
	if (setsid() < 0)
		_exit(1);
	return c;
}

static void shapes(const char *mode) {
	struct sigaction sa = {.sa_handler = on_usr1};
	if (!strncmp(mode, "chain", 5)) {
		int ready[2];
		if (pipe(ready) < 0)
			_exit(1);
		pid_t a = fork();
		if (a == 0) {
			close(ready[0]);
			pid_t b = fork();
			if (b == 0) {
				pid_t c = presetsid("C");
				dprintf(logfd, "chain %d %d %d\n", getppid(), getpid(), c);
				if (write(ready[1], "x", 1) < 0)
					_exit(1);
				close(ready[1]);
				count("B");
			}
			if (setsid() < 0 || write(ready[1], "x", 1) < 0)
				_exit(1);
			close(ready[1]);
			count("A");
		}
		close(ready[1]);
		char b[2]; // from B and A, once each has started its session
		if (read(ready[0], &b[0], 1) != 1 || read(ready[0], &b[1], 1) != 1)
			_exit(1);
		dprintf(logfd, "ready\n");
		idle();
	}
	if (!strcmp(mode, "sharedorphan") || !strcmp(mode, "sharedcousin")) {
		if (fork() == 0) { // X
			if (fork() == 0) { // L
				if (!strcmp(mode, "sharedorphan"))
					setsid();
				files_child(k_main);
				dprintf(logfd, "ready\n");
				idle();
			}
			idle();
		}
		idle();
	}
	if (!strcmp(mode, "zombieleader"))
		zombie_leader();
	if (!strcmp(mode, "dropped")) {
		int ready[2];
		if (pipe(ready) < 0)
			_exit(1);
		if (fork() == 0) { // A
			static char stack[64 << 10];
			if (clone(dropped_b_main, stack + sizeof stack, CLONE_FILES | SIGCHLD, ready) < 0)
				_exit(1);
			char b;
			if (read(ready[0], &b, 1) != 1 || open("/dev/zero", O_RDONLY) < 0)
				_exit(1);
			dprintf(logfd, "ready\n");
			idle();
		}
		idle();
	}
	if (!strcmp(mode, "gonefiles")) {
		if (fork() == 0) { // P
			signal(SIGCHLD, SIG_DFL);
			files_child(gone_l_main);
			dprintf(logfd, "ready\n");
			idle();
		}
		idle();
	}
	if (!strcmp(mode, "gonepre")) {
		int ready[2];
		if (pipe(ready) < 0)
			_exit(1);
		pid_t l = fork();
		if (l == 0) {
			close(ready[0]);
			setsid();
			pid_t q[2], c[2];
			int pc[2];
			if (pipe(pc) < 0)
				_exit(1);
			for (int i = 0; i < 2; i++) {
				q[i] = fork();
				if (q[i] == 0) {
					char who[4];
					snprintf(who, sizeof who, "C%d", i + 1);
					pid_t k = presetsid(who);
					if (write(pc[1], &k, sizeof k) != sizeof k)
						_exit(1);
					close(pc[0]);
					close(pc[1]);
					close(ready[1]);
					snprintf(who, sizeof who, "Q%d", i + 1);
					count(who);
				}
				if (read(pc[0], &c[i], sizeof c[i]) != sizeof c[i])
					_exit(1);
			}
			dprintf(logfd, "gonepre %d %d %d %d %d\n", getpid(), q[0], c[0], q[1], c[1]);
			if (write(ready[1], "x", 1) < 0)
				_exit(1);
			_exit(0);
		}
		close(ready[1]);
		char b;
		if (read(ready[0], &b, 1) != 1 || waitpid(l, NULL, 0) != l)
			_exit(1);
		dprintf(logfd, "ready\n");
		idle();
	}
	if (!strcmp(mode, "presetsid")) {
		int ready[2];
		if (pipe(ready) < 0)
			_exit(1);
		pid_t p = fork();
		if (p == 0) {
			pid_t c = fork();
			if (c == 0) {
				close(ready[0]);
				close(ready[1]);
				count("C");
			}
			if (setsid() < 0)
				_exit(1);
			dprintf(logfd, "presetsid %d %d\n", getpid(), c);
			if (write(ready[1], "x", 1) < 0)
				_exit(1);
			count("P");
		}
		close(ready[1]);
		char b;
		if (read(ready[0], &b, 1) < 0)
			_exit(1);
		dprintf(logfd, "ready\n");
		idle();
	}
	if (!strcmp(mode, "split")) {
		pid_t p = fork();
		if (p == 0) {
			signal(SIGCHLD, SIG_DFL);
			pid_t l = fork();
			if (l == 0) {
				setsid();
				pid_t a = fork();
				if (a == 0)
					count("A");
				static char stack[64 << 10];
				pid_t b = clone(b_main, stack + sizeof stack, CLONE_PARENT, NULL);
				if (b < 0)
					_exit(1);
				dprintf(logfd, "split %d %d %d %d\n", getppid(), a, b, getpid());
				_exit(0);
			}
			waitpid(l, NULL, 0);
			dprintf(logfd, "ready\n");
			idle();
		}
		idle();
	}
	int moved = !strcmp(mode, "moved");
	pid_t g = fork();
	if (g != 0)
		idle();
	// G
	signal(SIGCHLD, SIG_DFL);
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_usr2;
	sigaction(SIGUSR2, &sa, NULL);
	pid_t me = getpid();
	prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
	pid_t x = moved ? me : fork();
	if (x == 0) { // X of unflagged
		if (fork() == 0)
			leader(me);
		idle();
	}
	pid_t p = 0;
	if (moved) {
		p = fork();
		if (p == 0) {
			if (fork() == 0)
				leader(me);
			idle();
		}
	}
	while (!usr1)
		nap();
	prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
	if (moved) {
		kill(p, SIGKILL);
		waitpid(p, NULL, 0);
	}
	// M is the one child of ours that is not X (or P).
	char path[64], buf[256] = "";
	snprintf(path, sizeof path, "/proc/self/task/%d/children", me);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || read(fd, buf, sizeof buf - 1) < 0)
		_exit(1);
	close(fd);
	pid_t m = 0, c;
	for (char *s = buf; sscanf(s, "%d", &c) == 1; s = strchr(s + 1, ' ') ? strchr(s + 1, ' ') : s + strlen(s)) {
		if (c != x && c != p)
			m = c;
	}
	dprintf(logfd, "%s %d %d %d\n", mode, me, m, getsid(m));
	dprintf(logfd, "ready\n");
	for (;;) {
		nap();
		if (usr2) {
			usr2 = 0;
			int on = -1;
			prctl(PR_GET_CHILD_SUBREAPER, &on, 0, 0, 0);
			dprintf(logfd, "G subreaper %d\n", on);
		}
	}
}

static void nap(void) {
	struct timespec ts = {0, 20 * 1000 * 1000};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	logfd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (logfd < 0)
		return 1;
	root_pid = getpid();
	int outside = argc > 2 && !strcmp(argv[2], "chain-outside");
	if ((!outside && setsid() < 0) || prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) {
		dprintf(logfd, "root setup errno %d\n", errno);
		return 1;
	}
	struct sigaction sa = {.sa_handler = on_chld, .sa_flags = SA_RESTART};
	sigaction(SIGCHLD, &sa, NULL);
	if (argc > 2 && strcmp(argv[2], "alive-leader"))
		shapes(argv[2]);
	if (argc > 2 && !strcmp(argv[2], "alive-leader")) {
		if (fork() == 0) { // X
			if (fork() == 0) { // L
				setsid();
				pid_t k = fork();
				if (k == 0) {
					if (fork() == 0) { // M
						dprintf(logfd, "M started %d\n", getpid());
						idle();
					}
					_exit(0);
				}
				waitpid(k, NULL, 0);
				dprintf(logfd, "ready\n");
				idle();
			}
			idle();
		}
		idle();
	}
	pid_t a = fork();
	if (a == 0) {
		signal(SIGCHLD, SIG_DFL);
		setsid();
		int p[2];
		if (pipe(p) < 0)
			_exit(1);
		pid_t b = fork();
		if (b == 0) {
			setpgid(0, 0);
			close(p[0]);
			dprintf(logfd, "B started %d\n", getpid());
			for (unsigned long n = 1;; n++) {
				char tok[32];
				int k = snprintf(tok, sizeof tok, "t%lu", n);
				if (write(p[1], tok, k) != k)
					_exit(1);
				nap();
			}
		}
		setpgid(b, b);
		if (fork() == 0) {
			close(p[1]);
			dprintf(logfd, "C started %d\n", getpid());
			char buf[64];
			for (;;) {
				ssize_t k = read(p[0], buf, sizeof buf - 1);
				if (k <= 0) {
					dprintf(logfd, "C read %zd errno %d\n", k, errno);
					_exit(1);
				}
				buf[k] = 0;
				dprintf(logfd, "C got %s\n", buf);
			}
		}
		_exit(0);
	}
	pid_t d = fork();
	if (d == 0) {
		setpgid(0, 0);
		signal(SIGCHLD, SIG_DFL);
		if (fork() == 0) {
			dprintf(logfd, "E started %d\n", getpid());
			for (unsigned long n = 1;; n++) {
				dprintf(logfd, "E count %lu\n", n);
				nap();
			}
		}
		_exit(0);
	}
	int st;
	if (waitpid(a, &st, 0) != a || waitpid(d, &st, 0) != d) {
		dprintf(logfd, "root waitpid errno %d\n", errno);
		return 1;
	}
	dprintf(logfd, "root %d A %d D %d\n", getpid(), a, d);
	dprintf(logfd, "ready\n");
	sigset_t none;
	sigemptyset(&none);
	for (;;)
		sigsuspend(&none);
}
