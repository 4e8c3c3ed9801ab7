package integration

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// (g) podman 4.3 with crhook's hooks.d file: a podman container (runc)
// is checkpointed with crhook and restored by `podman run --annotation
// io.crhook.restore=DIR`.
//
// On this machine kind podman needs: --runtime runc (its default, crun
// 1.8, refuses hybrid cgroup hosts), and --ulimit for nofile and nproc
// (podman raises both above the hard limits and root lacks
// CAP_SYS_RESOURCE here: "error setting rlimit type 7: operation not
// permitted"). Its config differs from the checkpointed container's
// (hostname, mounts, cgroup path), so the restore uses
// io.crhook.config-check=warn.
func TestPodman(t *testing.T) {
	setup(t)
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("podman is not installed (apt-get install podman)")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("runc is not installed")
	}
	work := t.TempDir()
	tarball := filepath.Join(work, "rootfs.tar")
	if out, err := exec.Command("tar", "-C", rootfsDir, "-cf", tarball, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar rootfs: %v: %s", err, out)
	}
	image := fmt.Sprintf("localhost/crhook-it:%d", os.Getpid())
	podman(t, "import", tarball, image)
	t.Cleanup(func() { exec.Command("podman", "rmi", "-f", image).Run() })
	hooksDir := filepath.Join(work, "hooks.d")
	if err := os.MkdirAll(hooksDir, 0o755); err != nil {
		t.Fatal(err)
	}
	hooks := fmt.Sprintf(`{"version":"1.0.0","hook":{"path":%q,"args":["crhook","hook"]},"when":{"annotations":{"io.crhook.restore":".+"}},"stages":["createRuntime"]}`, crhookBin)
	if err := os.WriteFile(filepath.Join(hooksDir, "crhook.json"), []byte(hooks), 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(work, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(data, "log")
	name := fmt.Sprintf("crhook-it-%d", os.Getpid())
	common := []string{"--runtime", "runc", "--hooks-dir", hooksDir, "run", "-d",
		"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096", "-v", data + ":/data"}
	id := strings.TrimSpace(podman(t, append(common, "--name", name, image, "/bin/counter", "/data/log")...))
	t.Cleanup(func() { exec.Command("podman", "rm", "-f", name, name+"-restored").Run() })
	waitCount(t, logPath, 0, 20, 10*time.Second, func() string { return "" })

	images := filepath.Join(work, "images")
	mustCrhook(t, "checkpoint", id, "-D", images, "--runtime", "runc")
	deadline := time.Now().Add(10 * time.Second)
	for strings.TrimSpace(podman(t, "inspect", "--format", "{{.State.Status}}", name)) != "exited" {
		if time.Now().After(deadline) {
			t.Fatal("podman does not see the checkpointed container exit")
		}
		time.Sleep(50 * time.Millisecond)
	}
	n0 := lastCount(t, logPath)
	from := len(logLines(t, logPath))
	podman(t, append(common, "--name", name+"-restored",
		"--annotation", "io.crhook.restore="+images, "--annotation", "io.crhook.config-check=warn",
		image, "/bin/counter", "/data/log")...)
	lines := waitCount(t, logPath, from, n0+20, 10*time.Second, func() string { return restoreLog(images) })
	if cs := counts(lines[from:]); cs[0] != n0+1 {
		t.Fatalf("restored podman container began at %d, want %d%s", cs[0], n0+1, restoreLog(images))
	}
	if got := strings.TrimSpace(podman(t, "inspect", "--format", "{{.State.Status}}", name+"-restored")); got != "running" {
		t.Errorf("podman says the restored container is %s", got)
	}
	podman(t, "stop", "-t", "0", name+"-restored")
}

func podman(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("podman", args...).Output()
	if err != nil {
		msg := ""
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			msg = string(ee.Stderr)
		}
		t.Fatalf("podman %s: %v: %s", strings.Join(args, " "), err, msg)
	}
	return string(out)
}
