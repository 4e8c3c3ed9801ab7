//go:build linux && amd64

package crcore_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/crit"
	critcli "github.com/checkpoint-restore/go-criu/v7/crit/cli"
	criu_core "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/inventory"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pstree"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
	pb "github.com/crhook/crhook/proto"
)

// procStat returns the fields of /proc/PID/stat after the command name,
// numbered as in proc(5): field 3 (state) is at index 3.
func procStat(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	i := strings.LastIndexByte(string(b), ')')
	return append([]string{"", "", ""}, strings.Fields(string(b[i+1:]))...)
}

type mapping struct {
	start, end uint64
	perms      string
	path       string
}

func parseMaps(t *testing.T, lines []string) []mapping {
	t.Helper()
	var out []mapping
	for _, l := range lines {
		f := strings.Fields(l)
		s, e, _ := strings.Cut(f[0], "-")
		start, err1 := strconv.ParseUint(s, 16, 64)
		end, err2 := strconv.ParseUint(e, 16, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("maps line %q", l)
		}
		m := mapping{start: start, end: end, perms: f[1]}
		if len(f) > 5 {
			m.path = f[5]
		}
		out = append(out, m)
	}
	return out
}

// critDecodeFile decodes one image with go-criu's crit as the crit tool
// does: the entry type comes from the file's magic.
func critDecodeFile(path string) (*crit.CriuImage, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	et, err := critcli.GetEntryTypeFromImg(f)
	if err != nil {
		return nil, err
	}
	return crit.New(f, nil, "", false, true).Decode(et)
}

func entries[T proto.Message](t *testing.T, img *crit.CriuImage) []T {
	t.Helper()
	var out []T
	for _, e := range img.Entries {
		m, ok := e.Message.(T)
		if !ok {
			t.Fatalf("%s image holds a %T", img.Magic, e.Message)
		}
		out = append(out, m)
	}
	return out
}

// CRIU's crit reads every image crhook writes in CRIU's formats, and what
// it reads describes the process that was dumped: its pid and family, its
// registers, every mapping, every fd, and memory inside the mappings.
// crhook's own image kinds are not CRIU's: crit refuses them, crhook's
// decoder reads them.
func TestCritReadsDump(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "counter", false)
	p := crtest.Start(t, bin)
	p.WaitLine(t, `^count 5$`, 10*time.Second)

	// What we know of the process, taken while it is stopped and the
	// dump sees the same.
	crtest.Stop(t, p.Pid)
	pid := p.Pid
	maps := parseMaps(t, crtest.Maps(t, pid))
	stat := procStat(t, pid)
	sc, err := crtest.ReadSyscall(pid)
	if err != nil {
		t.Fatal(err)
	}
	files := crtest.Files(t, pid)
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	auxvRaw, err := os.ReadFile(fmt.Sprintf("/proc/%d/auxv", pid))
	if err != nil {
		t.Fatal(err)
	}
	pgid, _ := unix.Getpgid(pid)
	sid, _ := unix.Getsid(pid)

	dir := filepath.Join(t.TempDir(), "img")
	if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: pid, ImageDir: dir}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	crtest.Reap(pid)

	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	imgs := map[string]*crit.CriuImage{} // by file name
	byMagic := map[string][]string{}     // magic -> file names
	ownKinds := map[string]string{}
	for _, e := range ents {
		name := e.Name()
		path := filepath.Join(dir, name)
		switch {
		case !strings.HasSuffix(name, ".img"):
			t.Errorf("unexpected file %s in the image dir", name)
		case strings.HasPrefix(name, "pages-"):
			// raw memory, no framing
		case strings.HasPrefix(name, "crhook-"):
			if img, err := critDecodeFile(path); err == nil {
				t.Errorf("crit decoded crhook's own %s as %s: crhook's magics must not be CRIU's", name, img.Magic)
			}
			kind, msgs, err := crcore.DecodeImage(path)
			if err != nil {
				t.Errorf("crhook decode %s: %v", name, err)
				continue
			}
			if len(msgs) == 0 {
				t.Errorf("%s holds no entry", name)
			}
			ownKinds[name] = kind
			checkOwnImage(t, name, msgs, pid, bin)
		default:
			img, err := critDecodeFile(path)
			if err != nil {
				t.Errorf("crit decode %s: %v", name, err)
				continue
			}
			if len(img.Entries) == 0 {
				t.Errorf("crit: %s holds no entry", name)
			}
			imgs[name] = img
			byMagic[img.Magic] = append(byMagic[img.Magic], name)
		}
	}
	for _, k := range []string{"INVENTORY", "PSTREE", "CORE", "MM", "PAGEMAP", "FDINFO", "FILES", "FS"} {
		if len(byMagic[k]) != 1 {
			t.Errorf("%d %s images (%v), want 1", len(byMagic[k]), k, byMagic[k])
		}
	}
	if ownKinds["crhook-inventory.img"] != "CRHOOK_INVENTORY" || ownKinds[fmt.Sprintf("crhook-task-%d.img", pid)] != "CRHOOK_TASK" {
		t.Errorf("crhook's own images: %v", ownKinds)
	}
	one := func(magic string) *crit.CriuImage {
		t.Helper()
		if len(byMagic[magic]) == 0 {
			t.Fatalf("no %s image", magic)
		}
		return imgs[byMagic[magic][0]]
	}

	// inventory
	inv := entries[*inventory.InventoryEntry](t, one("INVENTORY"))
	if len(inv) != 1 || inv[0].GetImgVersion() == 0 {
		t.Errorf("inventory: %v", inv)
	}

	// pstree: the dumped pid, its group and session. The root's parent
	// is outside the tree: ppid 0, as CRIU writes it.
	tree := entries[*pstree.PstreeEntry](t, one("PSTREE"))
	if len(tree) != 1 {
		t.Fatalf("pstree: %d entries, want 1", len(tree))
	}
	pe := tree[0]
	if int(pe.GetPid()) != pid || pe.GetPpid() != 0 || int(pe.GetPgid()) != pgid || int(pe.GetSid()) != sid ||
		!slices.Equal(pe.GetThreads(), []uint32{uint32(pid)}) {
		t.Errorf("pstree entry %v; want pid %d ppid 0 pgid %d sid %d threads [%d]", pe, pid, pgid, sid, pid)
	}
	if name := fmt.Sprintf("core-%d.img", pid); imgs[name] == nil {
		t.Fatalf("no %s", name)
	}

	// core: the registers the kernel shows in /proc/PID/syscall.
	cores := entries[*criu_core.CoreEntry](t, imgs[fmt.Sprintf("core-%d.img", pid)])
	if len(cores) != 1 {
		t.Fatalf("core: %d entries", len(cores))
	}
	core := cores[0]
	if core.GetMtype() != criu_core.CoreEntry_X86_64 {
		t.Errorf("core mtype %v", core.GetMtype())
	}
	regs := core.GetThreadInfo().GetGpregs()
	if regs.GetIp() != sc.PC || regs.GetSp() != sc.SP || int64(regs.GetOrigAx()) != sc.Nr {
		t.Errorf("gpregs ip %#x sp %#x orig_ax %d; the kernel showed pc %#x sp %#x syscall %d", regs.GetIp(), regs.GetSp(), int64(regs.GetOrigAx()), sc.PC, sc.SP, sc.Nr)
	}
	within := func(addr uint64, perm byte) bool {
		for _, m := range maps {
			if m.start <= addr && addr < m.end && strings.IndexByte(m.perms, perm) >= 0 {
				return true
			}
		}
		return false
	}
	if !within(regs.GetIp(), 'x') {
		t.Errorf("ip %#x lies in no executable mapping", regs.GetIp())
	}
	if !within(regs.GetSp(), 'w') {
		t.Errorf("sp %#x lies in no writable mapping", regs.GetSp())
	}
	if c := strings.TrimSpace(string(comm)); core.GetTc().GetComm() != c {
		t.Errorf("comm %q, want %q", core.GetTc().GetComm(), c)
	}
	if core.GetTc().GetTaskState() != uint32(pb.CrhookTaskState_TASK_STOPPED) {
		t.Errorf("task_state %d, want %d (stopped)", core.GetTc().GetTaskState(), pb.CrhookTaskState_TASK_STOPPED)
	}

	// mm: every mapping but [vsyscall], with its protection, and the mm
	// fields of /proc/PID/stat.
	mms := entries[*mm.MmEntry](t, imgs[fmt.Sprintf("mm-%d.img", pid)])
	if len(mms) != 1 {
		t.Fatalf("mm: %d entries", len(mms))
	}
	mme := mms[0]
	var wantVmas []mapping
	for _, m := range maps {
		if m.path != "[vsyscall]" {
			wantVmas = append(wantVmas, m)
		}
	}
	vmas := mme.GetVmas()
	if len(vmas) != len(wantVmas) {
		t.Errorf("mm has %d vmas, /proc/PID/maps %d", len(vmas), len(wantVmas))
	}
	for i := range min(len(vmas), len(wantVmas)) {
		v, m := vmas[i], wantVmas[i]
		prot := ""
		for _, pr := range []struct {
			bit uint32
			c   byte
		}{{unix.PROT_READ, 'r'}, {unix.PROT_WRITE, 'w'}, {unix.PROT_EXEC, 'x'}} {
			if v.GetProt()&pr.bit != 0 {
				prot += string(pr.c)
			} else {
				prot += "-"
			}
		}
		shared := v.GetFlags()&unix.MAP_SHARED != 0
		if v.GetStart() != m.start || v.GetEnd() != m.end || prot != m.perms[:3] || shared != (m.perms[3] == 's') {
			t.Errorf("vma %d: %#x-%#x %s shared=%v; maps: %#x-%#x %s %s", i, v.GetStart(), v.GetEnd(), prot, shared, m.start, m.end, m.perms, m.path)
		}
	}
	for _, f := range []struct {
		name  string
		field int
		got   uint64
	}{
		{"start_code", 26, mme.GetMmStartCode()}, {"end_code", 27, mme.GetMmEndCode()},
		{"start_stack", 28, mme.GetMmStartStack()}, {"start_data", 45, mme.GetMmStartData()},
		{"end_data", 46, mme.GetMmEndData()}, {"start_brk", 47, mme.GetMmStartBrk()},
		{"arg_start", 48, mme.GetMmArgStart()}, {"arg_end", 49, mme.GetMmArgEnd()},
		{"env_start", 50, mme.GetMmEnvStart()}, {"env_end", 51, mme.GetMmEnvEnd()},
	} {
		if want, _ := strconv.ParseUint(stat[f.field], 10, 64); f.got != want {
			t.Errorf("mm %s %#x, /proc/PID/stat says %#x", f.name, f.got, want)
		}
	}
	var auxv []uint64
	for i := 0; i+8 <= len(auxvRaw); i += 8 {
		auxv = append(auxv, binary.LittleEndian.Uint64(auxvRaw[i:]))
	}
	if got := mme.GetMmSavedAuxv(); !slices.Equal(trimAuxv(got), trimAuxv(auxv)) {
		t.Errorf("mm auxv %v, /proc/PID/auxv %v", got, auxv)
	}
	if mme.GetMmBrk() < mme.GetMmStartBrk() {
		t.Errorf("brk %#x below start_brk %#x", mme.GetMmBrk(), mme.GetMmStartBrk())
	}

	// files.img: every id an fdinfo, a vma or the mm names is there.
	fileByID := map[uint32]*fdinfo.FileEntry{}
	for _, f := range entries[*fdinfo.FileEntry](t, one("FILES")) {
		if _, dup := fileByID[f.GetId()]; dup {
			t.Errorf("files.img: id %d twice", f.GetId())
		}
		fileByID[f.GetId()] = f
	}
	if exe := fileByID[mme.GetExeFileId()]; exe.GetReg().GetName() != bin {
		t.Errorf("exe file id %d is %v, want %s", mme.GetExeFileId(), exe, bin)
	}
	for _, v := range vmas {
		if v.GetStatus()&((1<<6)|(1<<7)) != 0 { // VMA_FILE_PRIVATE, VMA_FILE_SHARED
			if fileByID[uint32(v.GetShmid())].GetReg() == nil {
				t.Errorf("vma %#x maps file id %d, which files.img lacks", v.GetStart(), v.GetShmid())
			}
		}
	}

	// fdinfo: exactly the fds the process had, each naming a file of
	// its type; the regular ones by the path the kernel showed.
	fdName := fmt.Sprintf("fdinfo-%d.img", core.GetIds().GetFilesId())
	if imgs[fdName] == nil {
		t.Fatalf("core names files_id %d, but %s is missing", core.GetIds().GetFilesId(), fdName)
	}
	var gotFds, wantFds []int
	for _, e := range entries[*fdinfo.FdinfoEntry](t, imgs[fdName]) {
		fd := int(e.GetFd())
		gotFds = append(gotFds, fd)
		f := fileByID[e.GetId()]
		if f == nil || f.GetType() != e.GetType() {
			t.Errorf("fd %d names file %d of type %v; files.img has %v", fd, e.GetId(), e.GetType(), f)
			continue
		}
		if cloexec := e.GetFlags()&unix.FD_CLOEXEC != 0; cloexec != (files[fd].Flags&unix.O_CLOEXEC != 0) {
			t.Errorf("fd %d: close-on-exec %v in the image, fdinfo flags %#o", fd, cloexec, files[fd].Flags)
		}
		if e.GetType() == fdinfo.FdTypes_REG {
			r := f.GetReg()
			if r.GetName() != files[fd].Link || int64(r.GetPos()) != files[fd].Pos || r.GetFlags() != files[fd].Flags&^unix.O_CLOEXEC {
				t.Errorf("fd %d: %s pos %d flags %#o; the kernel showed %s pos %d flags %#o", fd, r.GetName(), r.GetPos(), r.GetFlags(), files[fd].Link, files[fd].Pos, files[fd].Flags)
			}
		}
	}
	for fd := range files {
		wantFds = append(wantFds, fd)
	}
	sort.Ints(gotFds)
	sort.Ints(wantFds)
	if !slices.Equal(gotFds, wantFds) {
		t.Errorf("fdinfo fds %v, the process had %v", gotFds, wantFds)
	}

	// fs: cwd and root name directories in files.img.
	fse := entries[*fs.FsEntry](t, imgs[fmt.Sprintf("fs-%d.img", pid)])
	if len(fse) != 1 || fileByID[fse[0].GetCwdId()].GetReg() == nil || fileByID[fse[0].GetRootId()].GetReg().GetName() != "/" {
		t.Errorf("fs entry %v", fse)
	}

	// pagemap: a head naming the pages file, then page runs, each inside
	// one vma, and together exactly the pages file's size.
	pmName := fmt.Sprintf("pagemap-%d.img", pid)
	pm := imgs[pmName]
	if pm == nil || len(pm.Entries) < 2 {
		t.Fatalf("%s: %v", pmName, pm)
	}
	head, ok := pm.Entries[0].Message.(*pagemap.PagemapHead)
	if !ok {
		t.Fatalf("%s starts with a %T", pmName, pm.Entries[0].Message)
	}
	var pages uint64
	for _, e := range pm.Entries[1:] {
		pe, ok := e.Message.(*pagemap.PagemapEntry)
		if !ok {
			t.Fatalf("%s holds a %T", pmName, e.Message)
		}
		start, end := pe.GetVaddr(), pe.GetVaddr()+uint64(pe.GetNrPages())*uint64(os.Getpagesize())
		inside := false
		for _, v := range vmas {
			if v.GetStart() <= start && end <= v.GetEnd() {
				inside = true
			}
		}
		if !inside || pe.GetNrPages() == 0 || start%uint64(os.Getpagesize()) != 0 {
			t.Errorf("pagemap run %#x-%#x (%d pages) lies in no vma", start, end, pe.GetNrPages())
		}
		if pe.GetFlags()&4 == 0 || pe.GetInParent() { // PE_PRESENT
			t.Errorf("pagemap run %#x: flags %#x in_parent %v, want present pages", start, pe.GetFlags(), pe.GetInParent())
		}
		pages += uint64(pe.GetNrPages())
	}
	fi, err := os.Stat(filepath.Join(dir, fmt.Sprintf("pages-%d.img", head.GetPagesId())))
	if err != nil {
		t.Fatalf("pagemap head names pages id %d: %v", head.GetPagesId(), err)
	}
	if uint64(fi.Size()) != pages*uint64(os.Getpagesize()) {
		t.Errorf("pages file holds %d bytes, the pagemap %d pages", fi.Size(), pages)
	}
}

// trimAuxv drops the AT_NULL terminator and whatever follows it.
func trimAuxv(a []uint64) []uint64 {
	for i := 0; i+1 < len(a); i += 2 {
		if a[i] == 0 {
			return a[:i]
		}
	}
	return a
}

func checkOwnImage(t *testing.T, name string, msgs []proto.Message, pid int, bin string) {
	t.Helper()
	switch m := msgs[0].(type) {
	case *pb.CrhookInventoryEntry:
		if m.GetArch() != "x86_64" || m.GetFormatVersion() == 0 {
			t.Errorf("%s: %v", name, m)
		}
	case *pb.CrhookTaskEntry:
		if int(m.GetPid()) != pid || len(m.GetThreads()) != 1 || int(m.GetThreads()[0].GetTid()) != pid {
			t.Errorf("%s: pid %d threads %v, want %d", name, m.GetPid(), m.GetThreads(), pid)
		}
		if m.GetExe() != "" && m.GetExe() != bin {
			t.Errorf("%s: exe %q, want %q", name, m.GetExe(), bin)
		}
	case *pb.CrhookRegFileEntry:
		if m.GetId() == 0 || m.GetIno() == 0 || m.GetBootId() == "" {
			t.Errorf("%s: %v", name, m)
		}
	case *pb.CrhookIpcEntry:
		// The IPC namespace's objects: any content is the namespace's.
	case *pb.CrhookSkOptsEntry:
		if m.GetId() == 0 {
			t.Errorf("%s: %v", name, m)
		}
	default:
		// crhook-checksums.img: see checksums_test.go.
		if name != "crhook-checksums.img" {
			t.Errorf("%s holds a %T", name, m)
		}
	}
}
