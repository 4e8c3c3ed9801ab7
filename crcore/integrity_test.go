//go:build linux && amd64

package crcore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
	"github.com/crhook/crhook/crcore/internal/image"
	pb "github.com/crhook/crhook/proto"
)

// dumpCounter dumps a running counter (killing it) and returns the image
// dir and its pid.
func dumpCounter(t *testing.T, leaveRunning bool) (string, int) {
	t.Helper()
	bin := crtest.BuildC(t, "counter", false)
	p := crtest.Start(t, bin)
	p.WaitLine(t, `^count 3$`, 10*time.Second)
	dir := filepath.Join(t.TempDir(), "img")
	if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: dir, LeaveRunning: leaveRunning}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	if !leaveRunning {
		crtest.Reap(p.Pid)
	}
	return dir, p.Pid
}

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	return dst
}

// TestChecksumsRefuseEveryFlippedByte flips one byte in each image file in
// turn: verification refuses it naming the file, and a restore of a
// corrupt pages file fails the same way, before any restored task runs,
// and leaves no process.
func TestChecksumsRefuseEveryFlippedByte(t *testing.T) {
	crtest.RequireRoot(t)
	dir, pid := dumpCounter(t, false)
	if err := crcore.Verify(dir); err != nil {
		t.Fatalf("verify of a good dump: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, image.ChecksumsFile)); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() == image.ChecksumsFile {
			continue
		}
		cp := copyDir(t, dir)
		path := filepath.Join(cp, e.Name())
		b, err := os.ReadFile(path)
		if err != nil || len(b) == 0 {
			t.Fatalf("%s: %v (%d bytes)", e.Name(), err, len(b))
		}
		b[len(b)/2] ^= 0x40
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		err = crcore.Verify(cp)
		if err == nil || !strings.Contains(err.Error(), e.Name()) || !errors.Is(err, crcore.ErrBadImage) {
			t.Errorf("flipped byte in %s: verify says %v", e.Name(), err)
		}
		if strings.HasPrefix(e.Name(), "pages-") {
			_, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: cp})
			if err == nil || !strings.Contains(err.Error(), e.Name()) {
				t.Errorf("restore of a corrupt %s: %v", e.Name(), err)
			}
			checkNoStray(t, []int{pid})
		}
	}
}

// TestVerifyRefuses covers a missing image, an image added after the
// dump, a truncated checksum file, and a pid that is taken.
func TestVerifyRefuses(t *testing.T) {
	crtest.RequireRoot(t)
	dir, pid := dumpCounter(t, true) // the dumped process runs on: its pid is taken
	core := fmt.Sprintf("core-%d.img", pid)

	cp := copyDir(t, dir)
	os.Remove(filepath.Join(cp, core))
	if err := crcore.Verify(cp); err == nil || !strings.Contains(err.Error(), core) || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing %s: %v", core, err)
	}
	_, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: cp})
	if err == nil || !strings.Contains(err.Error(), core) {
		t.Errorf("restore without %s: %v", core, err)
	}

	cp = copyDir(t, dir)
	os.WriteFile(filepath.Join(cp, "extra.img"), []byte("x"), 0o600)
	if err := crcore.Verify(cp); err == nil || !strings.Contains(err.Error(), "extra.img") {
		t.Errorf("added extra.img: %v", err)
	}

	cp = copyDir(t, dir)
	os.Truncate(filepath.Join(cp, image.ChecksumsFile), 10)
	if err := crcore.Verify(cp); err == nil || !strings.Contains(err.Error(), image.ChecksumsFile) {
		t.Errorf("truncated checksums: %v", err)
	}

	// The images are fine; the pid is not free.
	if err := crcore.Verify(dir); err != nil {
		t.Fatal(err)
	}
	_, err = crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir, PidWait: 100 * time.Millisecond})
	if !errors.Is(err, crcore.ErrPidTaken) || !strings.Contains(err.Error(), fmt.Sprint(pid)) {
		t.Errorf("restore over a taken pid: %v", err)
	}
	if st, _ := crtest.State(pid); st == 'Z' || st == 0 {
		t.Errorf("the running process %d was harmed: state %c", pid, st)
	}
	checkNoStray(t, nil)
}

// rewrite replaces image file name of dir by entries and re-signs the
// directory, as a hostile image maker would.
func rewrite(t *testing.T, dir, name string, k image.Kind, entries ...proto.Message) {
	t.Helper()
	os.Remove(filepath.Join(dir, name))
	os.Remove(filepath.Join(dir, image.ChecksumsFile))
	d, err := image.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	w, err := d.NewWriter(name, k)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range entries {
		if err := w.Write(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteChecksums(); err != nil {
		t.Fatal(err)
	}
}

func readImage[T proto.Message](t *testing.T, dir, name string) []T {
	t.Helper()
	_, msgs, err := crcore.DecodeImage(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	var out []T
	for _, m := range msgs {
		out = append(out, m.(T))
	}
	return out
}

// TestHostileFields: images whose checksums are right but whose contents
// would make a restore write outside the address space it builds, or
// come from another machine, are refused before anything is created.
func TestHostileFields(t *testing.T) {
	crtest.RequireRoot(t)
	dir, pid := dumpCounter(t, false)
	mmName := fmt.Sprintf("mm-%d.img", pid)
	pmName := fmt.Sprintf("pagemap-%d.img", pid)
	cases := []hostileCase{
		{"arch", "aarch64", func(dir string) {
			inv := readImage[*pb.CrhookInventoryEntry](t, dir, "crhook-inventory.img")[0]
			inv.Arch = proto.String("aarch64")
			rewrite(t, dir, "crhook-inventory.img", image.CrhookInventory, inv)
		}},
		{"version", "format version 99", func(dir string) {
			inv := readImage[*pb.CrhookInventoryEntry](t, dir, "crhook-inventory.img")[0]
			inv.FormatVersion = proto.Uint32(99)
			rewrite(t, dir, "crhook-inventory.img", image.CrhookInventory, inv)
		}},
		{"page size", "65536-byte pages", func(dir string) {
			inv := readImage[*pb.CrhookInventoryEntry](t, dir, "crhook-inventory.img")[0]
			inv.PageSize = proto.Uint32(65536)
			rewrite(t, dir, "crhook-inventory.img", image.CrhookInventory, inv)
		}},
		{"pages outside every vma", pmName, func(dir string) {
			msgs := readImage[proto.Message](t, dir, pmName)
			msgs = append(msgs, &pb.PagemapEntry{Vaddr: proto.Uint64(0x1000), NrPages: proto.Uint32(1), Flags: proto.Uint32(4)})
			rewrite(t, dir, pmName, image.Pagemap, msgs...)
		}},
		{"pages beyond the pages file", "needs", func(dir string) {
			msgs := readImage[proto.Message](t, dir, pmName)
			mm := readImage[*pb.MmEntry](t, dir, mmName)[0]
			v := mm.GetVmas()[0]
			msgs = append(msgs, &pb.PagemapEntry{Vaddr: proto.Uint64(v.GetStart()), NrPages: proto.Uint32(uint32((v.GetEnd() - v.GetStart()) / 4096)), Flags: proto.Uint32(4)})
			rewrite(t, dir, pmName, image.Pagemap, msgs...)
		}},
		{"vma over vsyscall", "outside the user address space", func(dir string) {
			mm := readImage[*pb.MmEntry](t, dir, mmName)[0]
			v := proto.Clone(mm.GetVmas()[0]).(*pb.VmaEntry)
			v.Start, v.End = proto.Uint64(0xffffffffff600000), proto.Uint64(0xffffffffff601000)
			mm.Vmas = append(mm.Vmas, v)
			rewrite(t, dir, mmName, image.MM, mm)
		}},
		{"overlapping vmas", "overlaps", func(dir string) {
			mm := readImage[*pb.MmEntry](t, dir, mmName)[0]
			mm.Vmas = append(mm.Vmas, proto.Clone(mm.GetVmas()[0]).(*pb.VmaEntry))
			rewrite(t, dir, mmName, image.MM, mm)
		}},
	}
	refuseEdited(t, dir, cases, []int{pid}, crcore.ErrBadImage, crcore.ErrNotSupported)
}

// hostileCase is an edit of a copy of an image directory, and what the
// restore's error must say.
type hostileCase struct {
	name, want string
	edit       func(dir string)
}

// refuseEdited restores a copy of dir edited by each case: the restore
// must fail saying the case's want, with an error matching one of kinds,
// and leave none of pids alive.
func refuseEdited(t *testing.T, dir string, cases []hostileCase, pids []int, kinds ...error) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cp := copyDir(t, dir)
			c.edit(cp)
			_, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: cp})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("restore: %v, want an error saying %q", err, c.want)
			}
			if !slices.ContainsFunc(kinds, func(k error) bool { return errors.Is(err, k) }) {
				t.Errorf("%v matches none of %v", err, kinds)
			}
			checkNoStray(t, pids)
		})
	}
}

// TestImagePermsAndLogs: every file of a dump of a tree (with pipes and
// shared files) is 0600 in a 0700 directory, and a debug log of a dump
// holds none of the target's memory (a secret in its environment).
func TestImagePermsAndLogs(t *testing.T) {
	crtest.RequireRoot(t)
	dir, _ := dumpTree(t)
	checkPerms(t, dir)

	const secret = "s3cr3t-d0-n0t-l0g-8d1f0c"
	bin := crtest.BuildC(t, "counter", false)
	logPath := filepath.Join(t.TempDir(), "log")
	cmd := exec.Command(bin, logPath)
	cmd.Env = []string{"CRHOOK_SECRET=" + secret}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	cmd.Process.Release()
	t.Cleanup(func() { crtest.KillAndReap(pid) })
	p := &crtest.Proc{Pid: pid, Log: logPath}
	p.WaitLine(t, `^count 3$`, 10*time.Second)
	var buf bytes.Buffer
	lg := logrus.New()
	lg.Out = &buf
	lg.SetLevel(logrus.TraceLevel)
	img := filepath.Join(t.TempDir(), "img")
	if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: pid, ImageDir: img, Log: logrus.NewEntry(lg)}); err != nil {
		t.Fatal(err)
	}
	crtest.Reap(pid)
	if buf.Len() == 0 {
		t.Fatal("no log")
	}
	if bytes.Contains(buf.Bytes(), []byte(secret)) {
		t.Errorf("the dump's log holds the target's memory:\n%s", buf.String())
	}
	// The secret is in the images (they are the memory): hence 0600.
	checkPerms(t, img)
}

// TestCorruptPagesFoundWhileFilling: a restore checks a pages file as it
// fills the task from it (and reads what the fill skipped, such as pages
// a child inherits copy-on-write). A flipped byte anywhere in a pages
// file of a large task (filled in parallel) or of a parent and its
// forked child still fails the restore, naming the file, and leaves no
// process; the image restores once the byte is back.
func TestCorruptPagesFoundWhileFilling(t *testing.T) {
	crtest.RequireRoot(t)
	t.Run("large", func(t *testing.T) {
		bin := crtest.BuildC(t, "memhog", true)
		p := crtest.Start(t, bin, "80")
		p.WaitLine(t, `^ready$`, 60*time.Second)
		flipEachPagesFile(t, p.Pid, []int{p.Pid})
	})
	t.Run("copy-on-write", func(t *testing.T) {
		_, ppid, cpid, _ := startCow(t)
		flipEachPagesFile(t, ppid, []int{ppid, cpid})
	})
}

// flipEachPagesFile dumps the tree of root, then flips a byte at eight
// places of each pages file in turn and restores.
func flipEachPagesFile(t *testing.T, root int, pids []int) {
	t.Helper()
	t.Cleanup(func() {
		for _, pid := range pids {
			crtest.KillAndReap(pid)
		}
	})
	dir := filepath.Join(t.TempDir(), "img")
	if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: root, ImageDir: dir}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	crtest.ReapGone(t, pids, 5*time.Second)
	files, _ := filepath.Glob(filepath.Join(dir, "pages-*.img"))
	if len(files) != len(pids) {
		t.Fatalf("pages files %v for %d tasks", files, len(pids))
	}
	for _, path := range files {
		name := filepath.Base(path)
		st, err := os.Stat(path)
		if err != nil || st.Size() == 0 {
			t.Fatalf("%s: %v (%d bytes)", name, err, st.Size())
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		for i := range int64(8) {
			off := i * (st.Size() - 1) / 7
			b := make([]byte, 1)
			if _, err := f.ReadAt(b, off); err != nil {
				t.Fatal(err)
			}
			b[0] ^= 0x40
			f.WriteAt(b, off)
			_, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir})
			if err == nil || !strings.Contains(err.Error(), name) || !errors.Is(err, crcore.ErrBadImage) {
				t.Errorf("restore with byte %d of %s flipped: %v", off, name, err)
			}
			checkNoStray(t, pids)
			b[0] ^= 0x40
			f.WriteAt(b, off)
		}
		f.Close()
	}
	rr, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir})
	if err != nil {
		t.Fatalf("restore of the image made whole again: %v", err)
	}
	for _, pid := range pids {
		unix.Kill(pid, unix.SIGKILL)
	}
	crtest.KillAndReap(rr.Pid)
	crtest.ReapGone(t, pids, 5*time.Second)
}

// TestParentPagesRefused: pages a pagemap marks as the parent's (a
// child's copy-on-write share) must be in the parent's image; an image
// where they are not, where the root claims some, or with flags crhook
// does not write, is refused naming the pagemap, and leaves no process.
func TestParentPagesRefused(t *testing.T) {
	crtest.RequireRoot(t)
	dir, ppid, cpid := dumpCow(t)
	ppm, cpm := fmt.Sprintf("pagemap-%d.img", ppid), fmt.Sprintf("pagemap-%d.img", cpid)
	const inParent = 1 << 16 // crhook's pagemap flag
	var inChild *pb.PagemapEntry
	for _, m := range readImage[proto.Message](t, dir, cpm)[1:] {
		if e := m.(*pb.PagemapEntry); e.GetFlags() == inParent {
			inChild = e
			break
		}
	}
	if inChild == nil {
		t.Fatalf("%s marks no pages as the parent's", cpm)
	}
	cases := []hostileCase{
		{"not in the parent's image", cpm, func(dir string) {
			// The parent's image loses the run the child's first
			// shared pages are in.
			var kept []proto.Message
			for i, m := range readImage[proto.Message](t, dir, ppm) {
				e, ok := m.(*pb.PagemapEntry)
				if i > 0 && ok && e.GetVaddr() <= inChild.GetVaddr() && inChild.GetVaddr() < e.GetVaddr()+uint64(e.GetNrPages())*4096 {
					continue
				}
				kept = append(kept, m)
			}
			rewrite(t, dir, ppm, image.Pagemap, kept...)
		}},
		{"in the root's parent", ppm, func(dir string) {
			msgs := readImage[proto.Message](t, dir, ppm)
			msgs[1].(*pb.PagemapEntry).Flags = proto.Uint32(inParent)
			rewrite(t, dir, ppm, image.Pagemap, msgs...)
		}},
		{"unknown flags", "flags 0x1", func(dir string) {
			msgs := readImage[proto.Message](t, dir, cpm)
			msgs[1].(*pb.PagemapEntry).Flags = proto.Uint32(1) // CRIU's PE_PARENT
			rewrite(t, dir, cpm, image.Pagemap, msgs...)
		}},
	}
	refuseEdited(t, dir, cases, []int{ppid, cpid}, crcore.ErrBadImage)
	// The image as dumped restores.
	rr, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	crtest.KillAndReap(rr.Pid)
}
