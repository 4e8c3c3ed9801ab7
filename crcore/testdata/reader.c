// reader: blocks in read(2) on its standard input and logs what it gets.
//
// usage: reader LOGFILE
//
// Logs "reading", then for each read "got N DATA" (or "err ERRNO", which
// a correct restore never causes), and "eof" at the end.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int fd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0)
		return 1;
	dprintf(fd, "reading\n");
	char buf[256];
	for (;;) {
		ssize_t n = read(0, buf, sizeof buf - 1);
		if (n < 0) {
			dprintf(fd, "err %d\n", errno);
			return 1;
		}
		if (n == 0) {
			dprintf(fd, "eof\n");
			return 0;
		}
		buf[n] = 0;
		dprintf(fd, "got %zd %s\n", n, buf);
	}
}
