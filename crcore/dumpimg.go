//go:build linux && amd64

package crcore

import (
	"bufio"
	"encoding/binary"
	"io"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore/internal/image"
	"github.com/crhook/crhook/crcore/internal/kabi"
	"github.com/crhook/crhook/crcore/internal/mem"
	"github.com/crhook/crhook/crcore/internal/procfs"
	pb "github.com/crhook/crhook/proto"
)

func newBufWriter(w io.Writer) *bufio.Writer { return bufio.NewWriterSize(w, 1<<20) }

func (d *dumper) writeImages(st *procfs.Stat, ts *taskState, mm *pb.MmEntry, runs []mem.Run, fds []*pb.FdinfoEntry, fs *pb.FsEntry) error {
	pid := st.Pid
	ids := &pb.TaskKobjIdsEntry{
		VmId:      proto.Uint32(1),
		FilesId:   proto.Uint32(uint32(pid)),
		FsId:      proto.Uint32(1),
		SighandId: proto.Uint32(1),
	}
	inv := &pb.InventoryEntry{
		ImgVersion:  proto.Uint32(imgVersion),
		FdinfoPerId: proto.Bool(true),
		RootIds:     ids,
	}
	if err := d.writeOne("inventory.img", image.Inventory, inv); err != nil {
		return err
	}
	ext := &pb.CrhookInventoryEntry{
		FormatVersion:   proto.Uint32(formatVersion),
		Arch:            proto.String(machineArch),
		KernelRelease:   proto.String(kernelRelease()),
		CreatedBy:       proto.String("crhook"),
		CreatedUnixNano: proto.Int64(time.Now().UnixNano()),
		PageSize:        proto.Uint32(uint32(pageSize)),
	}
	if err := d.writeOne("crhook-inventory.img", image.CrhookInventory, ext); err != nil {
		return err
	}
	ps := &pb.PstreeEntry{
		Pid:     proto.Uint32(uint32(pid)),
		Ppid:    proto.Uint32(uint32(st.Ppid)),
		Pgid:    proto.Uint32(uint32(st.Pgrp)),
		Sid:     proto.Uint32(uint32(st.Session)),
		Threads: []uint32{uint32(pid)},
	}
	if err := d.writeOne("pstree.img", image.Pstree, ps); err != nil {
		return err
	}
	core := coreEntry(ts, st, ids)
	if err := d.writeOne(coreName(pid), image.Core, core); err != nil {
		return err
	}
	th := &pb.CrhookThreadEntry{
		Tid:          proto.Uint32(uint32(pid)),
		Xsave:        ts.xsave,
		ClearTidAddr: proto.Uint64(ts.tidAddr),
		RobustList:   &pb.CrhookRobustListEntry{Head: proto.Uint64(ts.robustHead), Len: proto.Uint64(ts.robustLen)},
	}
	if ts.rseq.RseqAbiPointer != 0 {
		th.Rseq = &pb.CrhookRseqEntry{Ptr: proto.Uint64(ts.rseq.RseqAbiPointer), Len: proto.Uint32(ts.rseq.RseqAbiSize), Sig: proto.Uint32(ts.rseq.Signature), Flags: proto.Uint32(ts.rseq.Flags)}
	}
	if err := d.writeOne(extName(pid), image.CrhookTask, &pb.CrhookTaskEntry{
		Pid:         proto.Uint32(uint32(pid)),
		State:       pb.CrhookTaskState(ts.state).Enum(),
		Umask:       proto.Uint32(ts.umask),
		Personality: proto.Uint32(uint32(ts.personality)),
		Stdio:       d.files.stdio,
		Threads:     []*pb.CrhookThreadEntry{th},
		Vmas:        ts.vmas,
	}); err != nil {
		return err
	}
	if err := d.writeOne(mmName(pid), image.MM, mm); err != nil {
		return err
	}
	if err := d.writeOne(fsName(pid), image.Fs, fs); err != nil {
		return err
	}
	w, err := d.dir.NewWriter(pagemapName(pid), image.Pagemap)
	if err != nil {
		return err
	}
	if err := w.Write(&pb.PagemapHead{PagesId: proto.Uint32(uint32(pid))}); err != nil {
		w.Close()
		return err
	}
	for _, r := range runs {
		if err := w.Write(&pb.PagemapEntry{Vaddr: proto.Uint64(r.Addr), NrPages: proto.Uint32(uint32(r.NrPages)), Flags: proto.Uint32(pePresent)}); err != nil {
			w.Close()
			return err
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	fw, err := d.dir.NewWriter(fdinfoName(uint32(pid)), image.Fdinfo)
	if err != nil {
		return err
	}
	for _, f := range fds {
		if err := fw.Write(f); err != nil {
			fw.Close()
			return err
		}
	}
	if err := fw.Close(); err != nil {
		return err
	}
	files, err := d.dir.NewWriter("files.img", image.Files)
	if err != nil {
		return err
	}
	for _, f := range d.files.entries {
		if err := files.Write(f); err != nil {
			files.Close()
			return err
		}
	}
	return files.Close()
}

func (d *dumper) writeOne(name string, k image.Kind, m proto.Message) error {
	w, err := d.dir.NewWriter(name, k)
	if err != nil {
		return err
	}
	if err := w.Write(m); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}

func coreEntry(ts *taskState, st *procfs.Stat, ids *pb.TaskKobjIdsEntry) *pb.CoreEntry {
	r := &ts.regs
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
	fp := fpregsEntry(ts.xsave)
	var sas []*pb.SaEntry
	for i, a := range ts.sigactions {
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
		v := ts.itimers[k]
		return &pb.ItimerEntry{Isec: proto.Uint64(v[0]), Iusec: proto.Uint64(v[1]), Vsec: proto.Uint64(v[2]), Vusec: proto.Uint64(v[3])}
	}
	tc := &pb.TaskCoreEntry{
		TaskState:   proto.Uint32(ts.state),
		ExitCode:    proto.Uint32(0),
		Personality: proto.Uint32(uint32(ts.personality)),
		Flags:       proto.Uint32(uint32(st.Flags)),
		BlkSigset:   proto.Uint64(ts.sigmask),
		Comm:        proto.String(ts.comm),
		Timers:      &pb.TaskTimersEntry{Real: it(0), Virt: it(1), Prof: it(2)},
		Sigactions:  sas,
	}
	if ts.state == taskStopped {
		tc.StopSigno = proto.Uint32(uint32(unix.SIGSTOP))
	}
	thc := &pb.ThreadCoreEntry{
		FutexRla:    proto.Uint64(ts.robustHead),
		FutexRlaLen: proto.Uint32(uint32(ts.robustLen)),
		BlkSigset:   proto.Uint64(ts.sigmask),
		Comm:        proto.String(ts.comm),
		Sas: &pb.ThreadSasEntry{
			SsSp:    proto.Uint64(ts.altstack.SP),
			SsSize:  proto.Uint64(ts.altstack.Size),
			SsFlags: proto.Uint32(uint32(ts.altstack.Flags)),
		},
	}
	if ts.rseq.RseqAbiPointer != 0 {
		thc.RseqEntry = &pb.RseqEntry{
			RseqAbiPointer: proto.Uint64(ts.rseq.RseqAbiPointer),
			RseqAbiSize:    proto.Uint32(ts.rseq.RseqAbiSize),
			Signature:      proto.Uint32(ts.rseq.Signature),
		}
	}
	return &pb.CoreEntry{
		Mtype: pb.CoreEntry_X86_64.Enum(),
		ThreadInfo: &pb.ThreadInfoX86{
			ClearTidAddr: proto.Uint64(ts.tidAddr),
			Gpregs:       gp,
			Fpregs:       fp,
		},
		Tc:         tc,
		Ids:        ids,
		ThreadCore: thc,
	}
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

var _ = kabi.NSig
