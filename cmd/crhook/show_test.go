//go:build linux && amd64

package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/crhook/crhook/crcore/crtest"
)

// show DIR prints one "PID: FD TYPE DESCRIPTION" line per fd, each file
// resolved; show --json DIR prints the images as JSON.
func TestShowFds(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "unix", false)
	sockDir := t.TempDir()
	p := crtest.Start(t, bin, sockDir)
	p.WaitLine(t, `^ready$`, 5*time.Second)
	fd := map[string]string{}
	for _, kv := range regexp.MustCompile(`(\w+)=(\d+)`).FindAllStringSubmatch(p.WaitLine(t, `^fds (.*)$`, time.Second)[1], -1) {
		fd[kv[1]] = kv[2]
	}
	fds := crtest.Files(t, p.Pid)
	d := filepath.Join(t.TempDir(), "img")
	if r := crhook(t, "dump", "-t", strconv.Itoa(p.Pid), "-D", d, "--leave-running"); r.code != 0 {
		t.Fatalf("dump: exit %d, %q", r.code, r.stderr)
	}

	r := crhook(t, "show", d)
	if r.code != 0 {
		t.Fatalf("show: exit %d, stderr %q", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != len(fds) {
		t.Errorf("show printed %d lines for %d fds:\n%s", len(lines), len(fds), r.stdout)
	}
	pid := strconv.Itoa(p.Pid)
	for _, want := range []string{
		// The log, opened O_WRONLY|O_APPEND|O_CLOEXEC.
		`^` + pid + `: 3 REG ` + regexp.QuoteMeta(p.Log) + ` pos=\d+ flags=O_WRONLY\|O_APPEND\S* cloexec$`,
		`^` + pid + `: ` + fd["sp0"] + ` UNIXSK stream ino=\d+ peer=\d+$`,
		`^` + pid + `: ` + fd["lis"] + ` UNIXSK stream ino=\d+ listen backlog=5 name=` + regexp.QuoteMeta(filepath.Join(sockDir, "listen.sock")) + `$`,
		`^` + pid + `: ` + fd["qp1"] + ` UNIXSK seqpacket ino=\d+ peer=\d+ shutdown=write$`,
		`^` + pid + `: ` + fd["abs"] + ` UNIXSK seqpacket ino=\d+ listen backlog=3 name=@crhook-test-` + pid + `$`,
		`^` + pid + `: ` + fd["cl"] + ` UNIXSK datagram ino=\d+ peer=\d+$`,
		`^` + pid + `: ` + fd["dg"] + ` UNIXSK datagram ino=\d+ name=` + regexp.QuoteMeta(filepath.Join(sockDir, "dgram.sock")) + `$`,
		`^` + pid + `: 1500 UNIXSK stream ino=\d+ peer=\d+$`,
	} {
		if !regexp.MustCompile(`(?m)` + want).MatchString(r.stdout) {
			t.Errorf("show output lacks a line matching %s:\n%s", want, r.stdout)
		}
	}
	for _, l := range lines {
		if !regexp.MustCompile(`^` + pid + `: \d+ [A-Z]+ \S`).MatchString(l) {
			t.Errorf("line %q is not PID: FD TYPE DESCRIPTION", l)
		}
	}

	r = crhook(t, "show", "--json", d)
	var shown []shownJSON
	if err := json.Unmarshal([]byte(r.stdout), &shown); r.code != 0 || err != nil {
		t.Fatalf("show --json: exit %d, %v\n%.300s", r.code, err, r.stdout)
	}
	var files []string
	for _, s := range shown {
		files = append(files, s.File)
	}
	if !strings.Contains(fmt.Sprint(files), "files.img") || !strings.Contains(fmt.Sprint(files), "sk-queues.img") {
		t.Errorf("show --json printed %v", files)
	}
}
