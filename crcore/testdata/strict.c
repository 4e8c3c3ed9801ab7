// strict: a task in seccomp strict mode (read, write, _exit, sigreturn
// only) is dumped blocked in read and restored still in strict mode.
//
// usage: strict LOGFILE FIFO
//
// Opens FIFO for reading (blocking) and writing, enters strict mode, logs
// "ready", then logs "got C" for each byte C it reads; at 'q' it logs
// "done" and leaves with _exit (exit_group would be a violation).
#include "fdtest.h"
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

int main(int argc, char **argv) {
	fdtest_init(argc, argv);
	if (argc < 3)
		exit(2);
	int r = open(argv[2], O_RDONLY | O_NONBLOCK);
	int w = open(argv[2], O_WRONLY);
	if (r < 0 || w < 0 || fcntl(r, F_SETFL, 0) < 0)
		die("open fifo");
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0))
		die("strict mode");
	logf_("ready");
	for (;;) {
		char c;
		if (read(r, &c, 1) != 1) {
			logf_("read failed");
			syscall(SYS_exit, 1);
		}
		if (c == 'q')
			break;
		logf_("got %c", c);
	}
	logf_("done");
	syscall(SYS_exit, 0);
}
