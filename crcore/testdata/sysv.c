// sysv: SysV shared memory, semaphores and a message queue in an IPC
// namespace of its own, shared by a parent and its child.
//
// usage: sysv LOGFILE
//
// The program unshares its IPC namespace, creates a 3-page segment (key
// 0x5eed) attached read-write, a set of 3 semaphores (values 1 2 3) and
// a queue holding two messages (type 1 "hello", type 2 "world"), and
// writes "sysv-1" at the segment's start. It forks; the child logs
// "ready child", the parent "ready shm S sem M msg Q" with the ids. On
// SIGUSR1 the child writes "child-2" at offset 4096 of its attachment
// and logs "child wrote". On SIGUSR1 the parent logs "parent shm <0>
// <4096> sem A B C msg <type>:<text>,<type>:<text> ids S M Q" (taking
// the messages).
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <unistd.h>

static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }

struct msgbuf1 {
	long mtype;
	char text[32];
};

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int log = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (log < 0 || unshare(CLONE_NEWIPC) < 0)
		return 1;
	// Some ids used and freed first, so that the ids kept are not the
	// first a fresh namespace hands out.
	for (int i = 0; i < 3; i++) {
		shmctl(shmget(IPC_PRIVATE, 4096, 0600), IPC_RMID, NULL);
		semctl(semget(IPC_PRIVATE, 1, 0600), 0, IPC_RMID);
		msgctl(msgget(IPC_PRIVATE, 0600), IPC_RMID, NULL);
	}
	int shm = shmget(0x5eed, 3 * 4096, IPC_CREAT | 0640);
	int sem = semget(0x5eee, 3, IPC_CREAT | 0600);
	int msq = msgget(IPC_PRIVATE, 0620);
	if (shm < 0 || sem < 0 || msq < 0)
		return 1;
	char *p = shmat(shm, NULL, 0);
	if (p == (void *)-1)
		return 1;
	unsigned short v[3] = {1, 2, 3};
	semctl(sem, 0, SETALL, v);
	struct msgbuf1 m1 = {1, "hello"}, m2 = {2, "world"};
	msgsnd(msq, &m1, 6, 0);
	msgsnd(msq, &m2, 6, 0);
	strcpy(p, "sysv-1");
	signal(SIGUSR1, on_usr1);
	sigset_t blk, old;
	sigemptyset(&blk);
	sigaddset(&blk, SIGUSR1);
	sigprocmask(SIG_BLOCK, &blk, &old);
	pid_t kid = fork();
	if (kid < 0)
		return 1;
	if (kid == 0) {
		dprintf(log, "ready child\n");
		for (;;) {
			sigsuspend(&old);
			if (go) {
				go = 0;
				strcpy(p + 4096, "child-2");
				dprintf(log, "child wrote\n");
			}
		}
	}
	dprintf(log, "ready shm %d sem %d msg %d\n", shm, sem, msq);
	for (;;) {
		sigsuspend(&old);
		if (go) {
			go = 0;
			unsigned short w[3] = {0};
			semctl(sem, 0, GETALL, w);
			struct msgbuf1 a = {0}, b = {0};
			msgrcv(msq, &a, sizeof a.text, 0, IPC_NOWAIT);
			msgrcv(msq, &b, sizeof b.text, 0, IPC_NOWAIT);
			dprintf(log, "parent shm %s %s sem %d %d %d msg %ld:%s,%ld:%s ids %d %d %d\n", p, p + 4096, w[0], w[1], w[2],
				a.mtype, a.text, b.mtype, b.text, shm, sem, msq);
		}
	}
}
