// Package runtime is crhook's side of the OCI runtimes it works with
// (runc, crun, and podman through them): it reads a container's state
// (the runtime's "state" command, or its state directory), the bundle's
// config.json and the state JSON an OCI hook gets on stdin, in both
// runc's and crun's dialects; it finds a process's cgroups and freezes
// and thaws them (cgroup v1 freezer or v2 cgroup.freeze); it lists the
// tasks of a pid namespace; and it serializes checkpoints of one
// container with a lock file under /run/crhook.
//
// Everything here reads the host's view: paths in /proc/PID/cgroup are
// taken relative to the mount points crhook itself sees, so crhook must
// run in the host's cgroup and mount namespaces.
//
// The package name shadows the standard library's runtime: importers
// name it (ocirt "github.com/crhook/crhook/runtime").
//
//go:build linux

package runtime
