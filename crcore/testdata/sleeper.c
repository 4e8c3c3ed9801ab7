// sleeper: sleeps once in nanosleep and reports how the call ended.
//
// usage: sleeper LOGFILE MILLISECONDS
//
// Logs "sleeping", then one nanosleep of the given length (no retry loop:
// a stray EINTR is visible), then "slept rc=R errno=E".
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc < 3)
		return 2;
	int fd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0)
		return 1;
	long ms = atol(argv[2]);
	dprintf(fd, "sleeping\n");
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	int rc = nanosleep(&ts, NULL);
	int e = rc < 0 ? errno : 0;
	dprintf(fd, "slept rc=%d errno=%d\n", rc, e);
	return 0;
}
