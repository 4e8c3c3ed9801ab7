//go:build linux && amd64

package crcore

import (
	"encoding/binary"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore/internal/image"
	pb "github.com/crhook/crhook/proto"
)

// writeImages writes every image but the pages (already written).
func (d *dumper) writeImages(tasks []*dtask) error {
	root := tasks[0]
	rootIDs := kobjIDs(root)
	if err := d.writeOne("inventory.img", image.Inventory, &pb.InventoryEntry{
		ImgVersion:  proto.Uint32(imgVersion),
		FdinfoPerId: proto.Bool(true),
		RootIds:     rootIDs,
	}); err != nil {
		return err
	}
	if err := d.writeOne("crhook-inventory.img", image.CrhookInventory, &pb.CrhookInventoryEntry{
		FormatVersion:   proto.Uint32(formatVersion),
		Arch:            proto.String(machineArch),
		KernelRelease:   proto.String(kernelRelease()),
		CreatedBy:       proto.String("crhook"),
		CreatedUnixNano: proto.Int64(time.Now().UnixNano()),
		PageSize:        proto.Uint32(uint32(pageSize)),
		OutsideSid:      proto.Uint32(imageID(d.outside.sid)),
		OutsidePgid:     proto.Uint32(imageID(d.outside.pgid)),
	}); err != nil {
		return err
	}
	pw, err := d.dir.NewWriter("pstree.img", image.Pstree)
	if err != nil {
		return err
	}
	for _, t := range tasks {
		e := &pb.PstreeEntry{
			Pid:  proto.Uint32(uint32(t.nsPid)),
			Ppid: proto.Uint32(uint32(t.nsPpid)),
			Pgid: proto.Uint32(imageID(t.nsPgid)),
			Sid:  proto.Uint32(imageID(t.nsSid)),
		}
		for _, th := range t.threads {
			e.Threads = append(e.Threads, uint32(th.nsTid))
		}
		if err := pw.Write(e); err != nil {
			_ = pw.Close()
			return err
		}
	}
	if err := pw.Close(); err != nil {
		return err
	}
	// A task's images are its own: written in parallel (a tree of 200
	// writes 1400 small files).
	for _, err := range parallel(len(tasks), func(i int) error { return d.writeTask(tasks[i]) }) {
		if err != nil {
			return err
		}
	}
	files, err := d.dir.NewWriter("files.img", image.Files)
	if err != nil {
		return err
	}
	for _, f := range d.files.entries {
		if err := files.Write(f); err != nil {
			_ = files.Close()
			return err
		}
	}
	return files.Close()
}

// kobjIDs names the kernel objects of a task as CRIU does: tasks with the
// same id share the object. An mm and signal handlers are never shared
// between processes here (refused), so their ids are the process's pid;
// an fd table or fs info takes the smallest pid of its holders
// (checkSharing).
func kobjIDs(t *dtask) *pb.TaskKobjIdsEntry {
	id := proto.Uint32(uint32(t.nsPid))
	return &pb.TaskKobjIdsEntry{VmId: id, FilesId: proto.Uint32(t.filesID), FsId: proto.Uint32(t.fsID), SighandId: id}
}

func (d *dumper) writeTask(t *dtask) error {
	pid := t.nsPid
	ext := &pb.CrhookTaskEntry{
		Pid:         proto.Uint32(uint32(pid)),
		State:       pb.CrhookTaskState(t.state()).Enum(),
		Umask:       proto.Uint32(t.umask),
		Personality: proto.Uint32(uint32(t.personality)),
		Vmas:        t.vmas,
	}
	if t.parent == nil {
		ext.Stdio = d.files.stdio
	}
	for i, th := range t.threads {
		core := coreEntry(t, th, i == 0)
		attrsToCore(core, t, th)
		if err := d.writeOne(coreName(th.nsTid), image.Core, core); err != nil {
			return err
		}
		if t.zombie {
			continue
		}
		e := &pb.CrhookThreadEntry{
			Tid:          proto.Uint32(uint32(th.nsTid)),
			Xsave:        th.xsave,
			ClearTidAddr: proto.Uint64(th.tidAddr),
			RobustList:   &pb.CrhookRobustListEntry{Head: proto.Uint64(th.robustHead), Len: proto.Uint64(th.robustLen)},
		}
		if th.rseq.RseqAbiPointer != 0 {
			e.Rseq = &pb.CrhookRseqEntry{Ptr: proto.Uint64(th.rseq.RseqAbiPointer), Len: proto.Uint32(th.rseq.RseqAbiSize), Sig: proto.Uint32(th.rseq.Signature), Flags: proto.Uint32(th.rseq.Flags)}
		}
		attrsToThreadExt(e, th)
		ext.Threads = append(ext.Threads, e)
	}
	attrsToTaskExt(ext, t)
	if err := d.writeOne(extName(pid), image.CrhookTask, ext); err != nil {
		return err
	}
	if t.zombie {
		return nil
	}
	if err := d.writeOne(mmName(pid), image.MM, t.mm); err != nil {
		return err
	}
	if err := d.writeOne(fsName(pid), image.Fs, t.fs); err != nil {
		return err
	}
	w, err := d.dir.NewWriter(pagemapName(pid), image.Pagemap)
	if err != nil {
		return err
	}
	if err := w.Write(&pb.PagemapHead{PagesId: proto.Uint32(uint32(pid))}); err != nil {
		_ = w.Close()
		return err
	}
	for _, r := range t.runs {
		flags := uint32(pePresent)
		if r.Parent {
			flags = peInParent
		}
		if err := w.Write(&pb.PagemapEntry{Vaddr: proto.Uint64(r.Addr), NrPages: proto.Uint32(uint32(r.NrPages)), Flags: proto.Uint32(flags)}); err != nil {
			_ = w.Close()
			return err
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	if t.filesID != uint32(pid) {
		// The owner of the table writes it (fdinfo-<files_id>.img).
		return nil
	}
	fw, err := d.dir.NewWriter(fdinfoName(uint32(pid)), image.Fdinfo)
	if err != nil {
		return err
	}
	for _, f := range t.fds {
		if err := fw.Write(f); err != nil {
			_ = fw.Close()
			return err
		}
	}
	return fw.Close()
}

func (d *dumper) writeOne(name string, k image.Kind, m proto.Message) error {
	w, err := d.dir.NewWriter(name, k)
	if err != nil {
		return err
	}
	if err := w.Write(m); err != nil {
		_ = w.Close()
		return err
	}
	return w.Close()
}

func coreEntry(t *dtask, th *dthread, leader bool) *pb.CoreEntry {
	r := &th.regs
	gp := &pb.UserX86RegsEntry{
		R15: proto.Uint64(r.R15), R14: proto.Uint64(r.R14), R13: proto.Uint64(r.R13), R12: proto.Uint64(r.R12),
		Bp: proto.Uint64(r.Rbp), Bx: proto.Uint64(r.Rbx), R11: proto.Uint64(r.R11), R10: proto.Uint64(r.R10),
		R9: proto.Uint64(r.R9), R8: proto.Uint64(r.R8), Ax: proto.Uint64(r.Rax), Cx: proto.Uint64(r.Rcx),
		Dx: proto.Uint64(r.Rdx), Si: proto.Uint64(r.Rsi), Di: proto.Uint64(r.Rdi), OrigAx: proto.Uint64(r.Orig_rax),
		Ip: proto.Uint64(r.Rip), Cs: proto.Uint64(r.Cs), Flags: proto.Uint64(r.Eflags), Sp: proto.Uint64(r.Rsp),
		Ss: proto.Uint64(r.Ss), FsBase: proto.Uint64(r.Fs_base), GsBase: proto.Uint64(r.Gs_base),
		Ds: proto.Uint64(r.Ds), Es: proto.Uint64(r.Es), Fs: proto.Uint64(r.Fs), Gs: proto.Uint64(r.Gs),
		Mode: pb.UserX86RegsMode_NATIVE.Enum(),
	}
	c := &pb.CoreEntry{
		Mtype: pb.CoreEntry_X86_64.Enum(),
		ThreadInfo: &pb.ThreadInfoX86{
			ClearTidAddr: proto.Uint64(th.tidAddr),
			Gpregs:       gp,
			Fpregs:       fpregsEntry(th.xsave),
		},
		ThreadCore: &pb.ThreadCoreEntry{
			FutexRla:    proto.Uint64(th.robustHead),
			FutexRlaLen: proto.Uint32(uint32(th.robustLen)),
			BlkSigset:   proto.Uint64(th.sigmask),
			Comm:        proto.String(th.comm),
			Sas: &pb.ThreadSasEntry{
				SsSp:    proto.Uint64(th.altstack.SP),
				SsSize:  proto.Uint64(th.altstack.Size),
				SsFlags: proto.Uint32(uint32(th.altstack.Flags)),
			},
		},
	}
	if th.rseq.RseqAbiPointer != 0 {
		c.ThreadCore.RseqEntry = &pb.RseqEntry{
			RseqAbiPointer: proto.Uint64(th.rseq.RseqAbiPointer),
			RseqAbiSize:    proto.Uint32(th.rseq.RseqAbiSize),
			Signature:      proto.Uint32(th.rseq.Signature),
		}
	}
	if !leader {
		return c
	}
	c.Ids = kobjIDs(t)
	var sas []*pb.SaEntry
	for i, a := range t.sigactions {
		sig := i + 1
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
			continue
		}
		sas = append(sas, &pb.SaEntry{
			Sigaction: proto.Uint64(a.Handler),
			Flags:     proto.Uint64(a.Flags),
			Restorer:  proto.Uint64(a.Restorer),
			Mask:      proto.Uint64(a.Mask),
		})
	}
	it := func(k int) *pb.ItimerEntry {
		v := t.itimers[k]
		return &pb.ItimerEntry{Isec: proto.Uint64(v[0]), Iusec: proto.Uint64(v[1]), Vsec: proto.Uint64(v[2]), Vusec: proto.Uint64(v[3])}
	}
	c.Tc = &pb.TaskCoreEntry{
		TaskState:   proto.Uint32(t.state()),
		ExitCode:    proto.Uint32(uint32(t.st.ExitCode)),
		Personality: proto.Uint32(uint32(t.personality)),
		Flags:       proto.Uint32(uint32(t.st.Flags)),
		BlkSigset:   proto.Uint64(th.sigmask),
		Comm:        proto.String(th.comm),
		Timers:      &pb.TaskTimersEntry{Real: it(0), Virt: it(1), Prof: it(2)},
		Sigactions:  sas,
	}
	if t.stopped {
		c.Tc.StopSigno = proto.Uint32(uint32(unix.SIGSTOP))
	}
	return c
}

// fpregsEntry fills CRIU's fxsave view from the legacy area of XSAVE; the
// full buffer is kept in crhook's own task image.
func fpregsEntry(x []byte) *pb.UserX86FpregsEntry {
	if len(x) < 512 {
		x = append(x, make([]byte, 512-len(x))...)
	}
	u32s := func(off, n int) []uint32 {
		out := make([]uint32, n)
		for i := range out {
			out[i] = binary.LittleEndian.Uint32(x[off+4*i:])
		}
		return out
	}
	fp := &pb.UserX86FpregsEntry{
		Cwd:       proto.Uint32(uint32(binary.LittleEndian.Uint16(x[0:]))),
		Swd:       proto.Uint32(uint32(binary.LittleEndian.Uint16(x[2:]))),
		Twd:       proto.Uint32(uint32(x[4])),
		Fop:       proto.Uint32(uint32(binary.LittleEndian.Uint16(x[6:]))),
		Rip:       proto.Uint64(binary.LittleEndian.Uint64(x[8:])),
		Rdp:       proto.Uint64(binary.LittleEndian.Uint64(x[16:])),
		Mxcsr:     proto.Uint32(binary.LittleEndian.Uint32(x[24:])),
		MxcsrMask: proto.Uint32(binary.LittleEndian.Uint32(x[28:])),
		StSpace:   u32s(32, 32),
		XmmSpace:  u32s(160, 64),
		Padding:   u32s(416, 24),
	}
	if len(x) >= 576 {
		fp.Xsave = &pb.UserX86XsaveEntry{XstateBv: proto.Uint64(binary.LittleEndian.Uint64(x[512:]))}
	}
	return fp
}

func kernelRelease() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}
