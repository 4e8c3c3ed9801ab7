//go:build linux

package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// PidNSTasks lists every process whose pid namespace is pid's (compared
// through the /proc/PID/ns/pid links), pid included. Processes of
// namespaces nested below it are not listed.
func PidNSTasks(pid int) ([]int, error) {
	want, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	if err != nil {
		return nil, fmt.Errorf("read pid namespace of %d: %w", pid, err)
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var pids []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ns, err := os.Readlink(filepath.Join("/proc", e.Name(), "ns/pid"))
		if err != nil {
			continue // gone, or a kernel thread
		}
		if ns == want {
			pids = append(pids, p)
		}
	}
	sort.Ints(pids)
	return pids, nil
}

// Tree lists root and all its descendants, from /proc/PID/task/TID/children
// of every thread. It is only stable while the tree is frozen or stopped.
func Tree(root int) ([]int, error) {
	seen := map[int]bool{root: true}
	queue := []int{root}
	out := []int{}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		out = append(out, p)
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", p))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && p != root {
				continue
			}
			return nil, fmt.Errorf("list threads of %d: %w", p, err)
		}
		for _, t := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", p, t.Name()))
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				c, err := strconv.Atoi(f)
				if err == nil && !seen[c] {
					seen[c] = true
					queue = append(queue, c)
				}
			}
		}
	}
	sort.Ints(out)
	return out, nil
}

// Outside returns the pids of all that are not in tree.
func Outside(all, tree []int) []int {
	in := map[int]bool{}
	for _, p := range tree {
		in[p] = true
	}
	var out []int
	for _, p := range all {
		if !in[p] {
			out = append(out, p)
		}
	}
	return out
}

// Describe names a process for messages: "1234 (sh -c sleep 9)".
func Describe(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		c, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil {
			return strconv.Itoa(pid)
		}
		return fmt.Sprintf("%d [%s]", pid, strings.TrimSpace(string(c)))
	}
	cmd := strings.TrimRight(strings.ReplaceAll(string(b), "\x00", " "), " ")
	if len(cmd) > 60 {
		cmd = cmd[:60] + "..."
	}
	return fmt.Sprintf("%d (%s)", pid, cmd)
}
