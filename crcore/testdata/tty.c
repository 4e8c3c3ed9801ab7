// tty: a shell job: its standard streams are a terminal. Logs whether
// they are, then echoes each line of stdin to stdout as "echo: LINE".
//
// usage: tty LOGFILE
#include "fdtest.h"

int main(int argc, char **argv) {
	fdtest_init(argc, argv);
	logf_("isatty %d %d %d", isatty(0), isatty(1), isatty(2));
	logf_("ready");
	char buf[256];
	for (;;) {
		ssize_t n = read(0, buf, sizeof buf - 1);
		if (n <= 0) {
			logf_("eof %zd", n);
			return 0;
		}
		buf[n] = 0;
		logf_("got %s", strtok(buf, "\n"));
		dprintf(1, "echo: %s\n", buf);
	}
}
