package image

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v7/crit"
	core_x86 "github.com/checkpoint-restore/go-criu/v7/crit/images/core-x86"
	criu_core "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/inventory"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pagemap"
	criu_pstree "github.com/checkpoint-restore/go-criu/v7/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v7/magic"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/crhook/crhook/proto"
)

// TestMagicsMatchCRIU checks our CRIU kinds against go-criu's copy of
// CRIU's magic.h, and that crhook's own magics collide with none of it.
func TestMagicsMatchCRIU(t *testing.T) {
	mm := magic.LoadMagic()
	if got := mm.ByName["IMG_COMMON"]; got != uint64(MagicCommon) {
		t.Errorf("IMG_COMMON is 0x%x in CRIU, 0x%x here", got, MagicCommon)
	}
	if got := mm.ByName["IMG_SERVICE"]; got != uint64(MagicService) {
		t.Errorf("IMG_SERVICE is 0x%x in CRIU, 0x%x here", got, MagicService)
	}
	for _, ki := range kinds {
		k := ki.kind
		criu, isCRIU := mm.ByName[k.Name]
		switch {
		case strings.HasPrefix(k.Name, "CRHOOK_"):
			if name, ok := mm.ByValue[uint64(k.Magic)]; ok {
				t.Errorf("%s magic 0x%08x collides with CRIU's %s", k.Name, k.Magic, name)
			}
			if isCRIU {
				t.Errorf("%s is a CRIU name", k.Name)
			}
		case !isCRIU:
			t.Errorf("%s is not a CRIU image kind", k.Name)
		case criu != uint64(k.Magic):
			t.Errorf("%s magic is 0x%x in CRIU, 0x%08x here", k.Name, criu, k.Magic)
		}
	}
}

// critDecode decodes an image with go-criu's crit, CRIU's own decoder.
func critDecode(t *testing.T, path string, entryType proto.Message) []proto.Message {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := crit.New(f, nil, "", false, false).Decode(entryType)
	if err != nil {
		t.Fatalf("crit decode %s: %v", filepath.Base(path), err)
	}
	var out []proto.Message
	for _, e := range img.Entries {
		out = append(out, e.Message)
	}
	return out
}

// sameViaJSON converts crit's message back into our type through
// protojson (field names are shared) and compares it with what we wrote:
// every field survived CRIU's schema with its meaning.
func sameViaJSON(t *testing.T, wrote, criu proto.Message) {
	t.Helper()
	b, err := protojson.Marshal(criu)
	if err != nil {
		t.Fatal(err)
	}
	back := wrote.ProtoReflect().New().Interface()
	if err := protojson.Unmarshal(b, back); err != nil {
		t.Fatalf("crit's %s as ours: %v", criu.ProtoReflect().Descriptor().Name(), err)
	}
	if !proto.Equal(back, wrote) {
		t.Errorf("crit decoded %v\nwe wrote %v", back, wrote)
	}
}

func u32(v uint32) *uint32 { return proto.Uint32(v) }
func u64(v uint64) *uint64 { return proto.Uint64(v) }

func testCore() *pb.CoreEntry {
	regs := &pb.UserX86RegsEntry{
		R15: u64(15), R14: u64(14), R13: u64(13), R12: u64(12), Bp: u64(0x7ffd0000), Bx: u64(6),
		R11: u64(0x246), R10: u64(10), R9: u64(9), R8: u64(8), Ax: u64(0xfffffffffffffe00), Cx: u64(0x401000),
		Dx: u64(13), Si: u64(14), Di: u64(15), OrigAx: u64(230), Ip: u64(0x401234), Cs: u64(0x33),
		Flags: u64(0x246), Sp: u64(0x7ffd1000), Ss: u64(0x2b), FsBase: u64(0x7f0000001740), GsBase: u64(0),
		Ds: u64(0), Es: u64(0), Fs: u64(0), Gs: u64(0), Mode: pb.UserX86RegsMode_NATIVE.Enum(),
	}
	fp := &pb.UserX86FpregsEntry{
		Cwd: u32(0x37f), Swd: u32(0), Twd: u32(0), Fop: u32(0), Rip: u64(0), Rdp: u64(0),
		Mxcsr: u32(0x1f80), MxcsrMask: u32(0xffff),
		StSpace: make([]uint32, 32), XmmSpace: make([]uint32, 64), Padding: make([]uint32, 24),
		Xsave: &pb.UserX86XsaveEntry{XstateBv: u64(7), YmmhSpace: make([]uint32, 64)},
	}
	fp.XmmSpace[0] = 0xdeadbeef
	return &pb.CoreEntry{
		Mtype: pb.CoreEntry_X86_64.Enum(),
		ThreadInfo: &pb.ThreadInfoX86{
			ClearTidAddr: u64(0x7f0000001a10),
			Gpregs:       regs,
			Fpregs:       fp,
			Tls: []*pb.UserDescT{{
				EntryNumber: u32(12), BaseAddr: u32(0), Limit: u32(0), Seg_32Bit: proto.Bool(false),
				ContentsH: proto.Bool(false), ContentsL: proto.Bool(false), ReadExecOnly: proto.Bool(true),
				LimitInPages: proto.Bool(false), SegNotPresent: proto.Bool(true), Usable: proto.Bool(false),
			}},
		},
		Tc: &pb.TaskCoreEntry{
			TaskState: u32(1), ExitCode: u32(0), Personality: u32(0), Flags: u32(0x400100),
			BlkSigset: u64(0), Comm: proto.String("sleep"),
			Rlimits:    &pb.TaskRlimitsEntry{Rlimits: []*pb.RlimitEntry{{Cur: u64(8 << 20), Max: u64(^uint64(0))}}},
			Sigactions: []*pb.SaEntry{{Sigaction: u64(0), Flags: u64(0), Restorer: u64(0), Mask: u64(0)}},
			Timers: &pb.TaskTimersEntry{
				Real: &pb.ItimerEntry{Isec: u64(0), Iusec: u64(0), Vsec: u64(1), Vusec: u64(0)},
				Virt: &pb.ItimerEntry{Isec: u64(0), Iusec: u64(0), Vsec: u64(0), Vusec: u64(0)},
				Prof: &pb.ItimerEntry{Isec: u64(0), Iusec: u64(0), Vsec: u64(0), Vusec: u64(0)},
			},
			SignalsS: &pb.SignalQueueEntry{Signals: []*pb.SiginfoEntry{{Siginfo: make([]byte, 128)}}},
		},
		Ids: &pb.TaskKobjIdsEntry{VmId: u32(1), FilesId: u32(2), FsId: u32(3), SighandId: u32(4)},
		ThreadCore: &pb.ThreadCoreEntry{
			FutexRla: u64(0x7f0000001a20), FutexRlaLen: u32(24),
			Creds: &pb.CredsEntry{
				Uid: u32(0), Gid: u32(0), Euid: u32(0), Egid: u32(0), Suid: u32(0), Sgid: u32(0),
				Fsuid: u32(0), Fsgid: u32(0), CapEff: []uint32{0xffffffff, 0x1ff}, Secbits: u32(0),
			},
			RseqEntry: &pb.RseqEntry{RseqAbiPointer: u64(0x7f0000001fe0), RseqAbiSize: u32(32), Signature: u32(0x53053053)},
			SchedNice: proto.Int32(-5),
		},
	}
}

// TestCritReadsOurImages writes images with our Writer and decodes them
// with go-criu's crit: wire compatibility, required fields included.
func TestCritReadsOurImages(t *testing.T) {
	d := newDir(t)
	path := func(name string) string { return filepath.Join(d.Path(), name) }

	t.Run("inventory", func(t *testing.T) {
		inv := &pb.InventoryEntry{
			ImgVersion: u32(2), FdinfoPerId: proto.Bool(true), Lsmtype: pb.Lsmtype_NO_LSM.Enum(),
			RootIds: &pb.TaskKobjIdsEntry{VmId: u32(1), FilesId: u32(2), FsId: u32(3), SighandId: u32(4)},
		}
		writeImage(t, d, "inventory.img", Inventory, inv)
		got := critDecode(t, path("inventory.img"), &inventory.InventoryEntry{})
		if len(got) != 1 {
			t.Fatalf("crit decoded %d entries", len(got))
		}
		e := got[0].(*inventory.InventoryEntry)
		if e.GetImgVersion() != 2 || !e.GetFdinfoPerId() || e.GetRootIds().GetSighandId() != 4 {
			t.Errorf("crit decoded %v", e)
		}
		sameViaJSON(t, inv, e)
	})

	t.Run("pstree", func(t *testing.T) {
		want := []*pb.PstreeEntry{pstree(100), pstree(200)}
		writeImage(t, d, "pstree.img", Pstree, want[0], want[1])
		got := critDecode(t, path("pstree.img"), &criu_pstree.PstreeEntry{})
		if len(got) != 2 {
			t.Fatalf("crit decoded %d entries", len(got))
		}
		for i, m := range got {
			e := m.(*criu_pstree.PstreeEntry)
			if e.GetPid() != want[i].GetPid() || len(e.GetThreads()) != 2 || e.GetThreads()[1] != want[i].GetPid()+1 {
				t.Errorf("crit decoded %v", e)
			}
			sameViaJSON(t, want[i], e)
		}
	})

	t.Run("core", func(t *testing.T) {
		core := testCore()
		writeImage(t, d, "core-100.img", Core, core)
		got := critDecode(t, path("core-100.img"), &criu_core.CoreEntry{})
		if len(got) != 1 {
			t.Fatalf("crit decoded %d entries", len(got))
		}
		e := got[0].(*criu_core.CoreEntry)
		ti := e.GetThreadInfo()
		if e.GetMtype() != criu_core.CoreEntry_X86_64 ||
			ti.GetGpregs().GetIp() != 0x401234 || ti.GetGpregs().GetOrigAx() != 230 ||
			ti.GetGpregs().GetMode() != core_x86.UserX86RegsMode_NATIVE ||
			ti.GetFpregs().GetMxcsr() != 0x1f80 || ti.GetFpregs().GetXmmSpace()[0] != 0xdeadbeef ||
			ti.GetFpregs().GetXsave().GetXstateBv() != 7 || ti.GetClearTidAddr() != 0x7f0000001a10 ||
			len(ti.GetTls()) != 1 || !ti.GetTls()[0].GetSegNotPresent() ||
			e.GetTc().GetComm() != "sleep" || e.GetTc().GetRlimits().GetRlimits()[0].GetCur() != 8<<20 ||
			e.GetThreadCore().GetFutexRlaLen() != 24 || e.GetThreadCore().GetSchedNice() != -5 ||
			e.GetThreadCore().GetRseqEntry().GetSignature() != 0x53053053 ||
			e.GetThreadCore().GetCreds().GetCapEff()[1] != 0x1ff {
			t.Errorf("crit decoded %v", e)
		}
		sameViaJSON(t, core, e)
	})

	t.Run("mm", func(t *testing.T) {
		m := &pb.MmEntry{
			MmStartCode: u64(0x400000), MmEndCode: u64(0x401000), MmStartData: u64(0x402000), MmEndData: u64(0x403000),
			MmStartStack: u64(0x7ffd0000), MmStartBrk: u64(0x404000), MmBrk: u64(0x425000),
			MmArgStart: u64(0x7ffd1000), MmArgEnd: u64(0x7ffd1010), MmEnvStart: u64(0x7ffd1010), MmEnvEnd: u64(0x7ffd1fe0),
			ExeFileId: u32(7), MmSavedAuxv: []uint64{33, 0x7ffd2000, 0, 0}, Dumpable: proto.Int32(1),
			Vmas: []*pb.VmaEntry{
				{Start: u64(0x400000), End: u64(0x401000), Pgoff: u64(0), Shmid: u64(7), Prot: u32(5), Flags: u32(2), Status: u32(0x41), Fd: proto.Int64(-1)},
				{Start: u64(0x7ffd0000), End: u64(0x7ffd2000), Pgoff: u64(0), Shmid: u64(0), Prot: u32(3), Flags: u32(0x122), Status: u32(0x3), Fd: proto.Int64(-1), Madv: u64(0)},
			},
		}
		writeImage(t, d, "mm-100.img", MM, m)
		got := critDecode(t, path("mm-100.img"), &mm.MmEntry{})
		if len(got) != 1 {
			t.Fatalf("crit decoded %d entries", len(got))
		}
		e := got[0].(*mm.MmEntry)
		if e.GetExeFileId() != 7 || len(e.GetVmas()) != 2 || e.GetVmas()[1].GetFlags() != 0x122 || e.GetVmas()[0].GetFd() != -1 {
			t.Errorf("crit decoded %v", e)
		}
		sameViaJSON(t, m, e)
	})

	t.Run("pagemap", func(t *testing.T) {
		head := &pb.PagemapHead{PagesId: u32(1)}
		ents := []*pb.PagemapEntry{
			{Vaddr: u64(0x400000), NrPages: u32(1), Flags: u32(4)},
			{Vaddr: u64(0x7ffd0000), NrPages: u32(2), Flags: u32(4)},
		}
		writeImage(t, d, "pagemap-100.img", Pagemap, head, ents[0], ents[1])
		got := critDecode(t, path("pagemap-100.img"), nil)
		if len(got) != 3 {
			t.Fatalf("crit decoded %d entries", len(got))
		}
		if h := got[0].(*pagemap.PagemapHead); h.GetPagesId() != 1 {
			t.Errorf("crit decoded head %v", h)
		}
		sameViaJSON(t, head, got[0])
		for i, m := range got[1:] {
			e := m.(*pagemap.PagemapEntry)
			if e.GetVaddr() != ents[i].GetVaddr() || e.GetNrPages() != ents[i].GetNrPages() {
				t.Errorf("crit decoded %v", e)
			}
			sameViaJSON(t, ents[i], e)
		}
	})

	t.Run("fdinfo", func(t *testing.T) {
		fds := []*pb.FdinfoEntry{
			{Id: u32(1), Flags: u32(0), Type: pb.FdTypes_REG.Enum(), Fd: u32(0)},
			{Id: u32(2), Flags: u32(1), Type: pb.FdTypes_PIPE.Enum(), Fd: u32(3)},
		}
		writeImage(t, d, "fdinfo-2.img", Fdinfo, fds[0], fds[1])
		got := critDecode(t, path("fdinfo-2.img"), &fdinfo.FdinfoEntry{})
		if len(got) != 2 {
			t.Fatalf("crit decoded %d entries", len(got))
		}
		if e := got[1].(*fdinfo.FdinfoEntry); e.GetType() != fdinfo.FdTypes_PIPE || e.GetFd() != 3 || e.GetFlags() != 1 {
			t.Errorf("crit decoded %v", e)
		}
		for i := range fds {
			sameViaJSON(t, fds[i], got[i])
		}
	})

	t.Run("files", func(t *testing.T) {
		fown := &pb.FownEntry{Uid: u32(0), Euid: u32(0), Signum: u32(0), PidType: u32(0), Pid: u32(0)}
		files := []*pb.FileEntry{
			{Type: pb.FdTypes_REG.Enum(), Id: u32(1), Reg: &pb.RegFileEntry{
				Id: u32(1), Flags: u32(0x8002), Pos: u64(42), Fown: fown, Name: proto.String("/tmp/log"),
				MntId: proto.Int32(-1), Size: u64(4096), Mode: u32(0o100644),
			}},
			{Type: pb.FdTypes_PIPE.Enum(), Id: u32(2), Pipe: &pb.PipeEntry{Id: u32(2), PipeId: u32(123456), Flags: u32(0), Fown: fown}},
		}
		writeImage(t, d, "files.img", Files, files[0], files[1])
		got := critDecode(t, path("files.img"), &fdinfo.FileEntry{})
		if len(got) != 2 {
			t.Fatalf("crit decoded %d entries", len(got))
		}
		reg := got[0].(*fdinfo.FileEntry).GetReg()
		if reg.GetName() != "/tmp/log" || reg.GetPos() != 42 || reg.GetMntId() != -1 || reg.GetFown() == nil {
			t.Errorf("crit decoded %v", got[0])
		}
		if p := got[1].(*fdinfo.FileEntry).GetPipe(); p.GetPipeId() != 123456 {
			t.Errorf("crit decoded %v", got[1])
		}
		for i := range files {
			sameViaJSON(t, files[i], got[i])
		}
	})

	t.Run("crhook kinds are unknown to crit", func(t *testing.T) {
		writeImage(t, d, "crhook-inventory.img", CrhookInventory, &pb.CrhookInventoryEntry{FormatVersion: u32(1), Arch: proto.String("x86_64")})
		f, err := os.Open(path("crhook-inventory.img"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := crit.New(f, nil, "", false, false).Decode(&pb.CrhookInventoryEntry{}); err == nil {
			t.Error("crit decoded a crhook image; its magic must be unknown to CRIU")
		}
	})
}
