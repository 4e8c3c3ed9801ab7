// Package crcore is crhook's checkpoint/restore engine. Its public API is
// what a runtime embeds: Dump a process tree into an image directory and
// Restore it from one. Everything below (ptrace and syscall injection,
// procfs parsing, memory, files, the image format) lives under internal/.
//
// The engine drives its targets from outside with ptrace: no code is
// injected into a target beyond single syscall instructions, and a
// restored process is built inside a "husk" (a process stopped at its
// first instruction) by syscalls injected into it. See DESIGN.md.
//
// Every ptrace request for a tracee must come from the OS thread that
// attached it, so Dump and Restore run their tracing on one goroutine
// locked to its OS thread; that thread is discarded when they return.
//
//go:build linux && amd64

package crcore

import (
	"errors"
	"io"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
)

// Sentinel errors, matched with errors.Is.
var (
	// ErrNotSupported: the target uses something the engine cannot dump
	// or restore (yet). The error text names the pid, fd or VMA.
	ErrNotSupported = errors.New("not supported")
	// ErrPidTaken: a pid the image needs is used by another process.
	ErrPidTaken = errors.New("pid is taken")
	// ErrBadImage: the image directory is corrupt or not ours.
	ErrBadImage = errors.New("bad image")
)

// DumpOptions says what to dump and where.
type DumpOptions struct {
	// Pid is the root of the tree to dump.
	Pid int
	// ExtraRoots are more processes of Pid's pid namespace, outside its
	// tree (a container's `runc exec` processes), dumped with their own
	// trees as if they were children of Pid: in the images their parent
	// is Pid. A restored one's getppid is therefore Pid's pid (1 in a
	// container) where it was 0 (a parent outside the namespace). One
	// whose session or process group lies outside the namespace (0 in
	// it) is recorded in Pid's, so it is restored into Pid's session.
	ExtraRoots []int
	// ImageDir receives the images. It is created 0700 if missing and
	// must not hold images already.
	ImageDir string
	// LeaveRunning resumes the tree after a successful dump; otherwise it
	// is killed.
	LeaveRunning bool
	// Thaw, when set, tells that the caller froze the tree (its cgroup)
	// before calling Dump, so that no task can fork or exit while the tree
	// is being collected. Dump seizes every task while frozen, then calls
	// Thaw; the tasks stop in ptrace at once. Thaw is called at most once.
	Thaw func() error
	// Progress, when set, counts the bytes of memory written so far, for
	// a progress display.
	Progress *Progress
	// Log receives progress; nil logs nothing.
	Log *logrus.Entry
}

// Progress counts the memory bytes a dump or restore has moved. Total is
// what a restore will move (0 while unknown, as during a dump). Both are
// safe to read while the operation runs.
type Progress struct {
	Done  atomic.Uint64
	Total atomic.Uint64
}

func (p *Progress) counter() *atomic.Uint64 {
	if p == nil {
		return nil
	}
	return &p.Done
}

// DumpResult describes a finished dump.
type DumpResult struct {
	Pids  []int
	Stats Stats
}

// Stats are the figures of one dump or restore.
type Stats struct {
	FrozenTime   time.Duration `json:"frozen_ns"`
	MemoryTime   time.Duration `json:"memory_ns"`
	TotalTime    time.Duration `json:"total_ns"`
	PagesScanned uint64        `json:"pages_scanned"`
	PagesSkipped uint64        `json:"pages_zero"`
	PagesWritten uint64        `json:"pages_written"`
	// PagesParent: pages a dump recorded as shared with the parent
	// process (copy-on-write after a fork), written once, in the
	// parent's image. A restore counts those it had to copy from there
	// in PagesRestored.
	PagesParent   uint64 `json:"pages_parent"`
	PagesRestored uint64 `json:"pages_restored"`
	// PagesUserfault: of PagesRestored, those installed through a
	// userfaultfd (UFFDIO_COPY) rather than written.
	PagesUserfault uint64 `json:"pages_userfault"`
}

// RestoreOptions says what to restore.
type RestoreOptions struct {
	ImageDir string
	// Stdio are the files that replace the dumped tree's standard
	// streams when those were not restorable (a terminal, a pipe or a
	// socket to the outside). Nil entries default to the caller's own.
	Stdin, Stdout, Stderr interface {
		Fd() uintptr
	}
	// NewPidNS restores the tree into a new pid namespace, its root as
	// the namespace's init; the image's root must have been pid 1 of its
	// own namespace (a container's init).
	NewPidNS bool
	// PidWait bounds how long a restore waits for a pid it needs to be
	// released (a just-killed process not yet reaped). Default 3s.
	PidWait time.Duration
	// Progress, when set, counts the bytes of memory restored so far.
	Progress *Progress
	Log      *logrus.Entry
}

// Restored is a running restored tree. Its root is a child of the
// calling process.
type Restored struct {
	// Pid is the root's pid as the caller sees it.
	Pid   int
	Stats Stats
}

// machineArch names the architecture in images, as uname(2) does.
const machineArch = "x86_64"

func logOrDiscard(l *logrus.Entry) *logrus.Entry {
	if l != nil {
		return l
	}
	lg := logrus.New()
	lg.Out = io.Discard
	return logrus.NewEntry(lg)
}
