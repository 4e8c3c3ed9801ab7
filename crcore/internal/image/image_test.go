package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	pb "github.com/crhook/crhook/proto"
)

func newDir(t *testing.T) *Dir {
	t.Helper()
	d, err := Create(filepath.Join(t.TempDir(), "img"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func writeImage(t *testing.T, d *Dir, name string, k Kind, entries ...proto.Message) {
	t.Helper()
	w, err := d.NewWriter(name, k)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range entries {
		if b, ok := m.(*wrapperspb.BytesValue); ok {
			err = w.WriteRaw(b.GetValue())
		} else {
			err = w.Write(m)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func pstree(pid uint32) *pb.PstreeEntry {
	return &pb.PstreeEntry{Pid: proto.Uint32(pid), Ppid: proto.Uint32(1), Pgid: proto.Uint32(pid), Sid: proto.Uint32(1), Threads: []uint32{pid, pid + 1}}
}

func TestRoundTrip(t *testing.T) {
	d := newDir(t)
	want := []*pb.PstreeEntry{pstree(10), pstree(20), pstree(30)}
	writeImage(t, d, "pstree.img", Pstree, want[0], want[1], want[2])

	r, err := d.NewReader("pstree.img", Pstree)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := ReadAll[pb.PstreeEntry](r)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("read %d entries, want %d", len(got), len(want))
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("entry %d: got %v, want %v", i, got[i], want[i])
		}
	}
	// End of file stays io.EOF, unwrapped.
	if err := r.Read(&pb.PstreeEntry{}); err != io.EOF { //nolint:errorlint // must be io.EOF itself
		t.Errorf("read past end: %v, want io.EOF", err)
	}
}

func TestRawAndDecode(t *testing.T) {
	d := newDir(t)
	data := []byte("hello, pipe")
	pd := &pb.PipeDataEntry{PipeId: proto.Uint32(77), Bytes: proto.Uint32(uint32(len(data)))}
	writeImage(t, d, "pipes-data.img", PipesData, pd, wrapperspb.Bytes(data), pd, wrapperspb.Bytes(data))

	r, err := d.NewReader("pipes-data.img", PipesData)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for range 2 {
		var e pb.PipeDataEntry
		if err := r.Read(&e); err != nil {
			t.Fatal(err)
		}
		raw, err := r.ReadRaw(int(e.GetBytes()))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(raw, data) {
			t.Fatalf("raw data %q, want %q", raw, data)
		}
	}

	k, msgs, err := Decode(filepath.Join(d.Path(), "pipes-data.img"))
	if err != nil {
		t.Fatal(err)
	}
	if k != PipesData || len(msgs) != 4 {
		t.Fatalf("Decode: kind %v, %d msgs; want PIPES_DATA, 4", k, len(msgs))
	}
	if !proto.Equal(msgs[0], pd) || !bytes.Equal(msgs[1].(*wrapperspb.BytesValue).GetValue(), data) {
		t.Errorf("Decode: got %v", msgs)
	}
}

func TestDecodePagemapAndGhost(t *testing.T) {
	d := newDir(t)
	head := &pb.PagemapHead{PagesId: proto.Uint32(3)}
	pe := &pb.PagemapEntry{Vaddr: proto.Uint64(0x400000), NrPages: proto.Uint32(2), Flags: proto.Uint32(4)}
	writeImage(t, d, "pagemap-1.img", Pagemap, head, pe)
	k, msgs, err := Decode(filepath.Join(d.Path(), "pagemap-1.img"))
	if err != nil {
		t.Fatal(err)
	}
	if k != Pagemap || len(msgs) != 2 || !proto.Equal(msgs[0], head) || !proto.Equal(msgs[1], pe) {
		t.Errorf("pagemap: kind %v msgs %v", k, msgs)
	}

	gf := &pb.GhostFileEntry{Uid: proto.Uint32(0), Gid: proto.Uint32(0), Mode: proto.Uint32(0o100600)}
	writeImage(t, d, "ghost-file-1.img", GhostFile, gf, wrapperspb.Bytes([]byte("contents")))
	_, msgs, err = Decode(filepath.Join(d.Path(), "ghost-file-1.img"))
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 || string(msgs[1].(*wrapperspb.BytesValue).GetValue()) != "contents" {
		t.Errorf("ghost: %v", msgs)
	}

	gc := &pb.GhostFileEntry{Uid: proto.Uint32(0), Gid: proto.Uint32(0), Mode: proto.Uint32(0o100600), Chunks: proto.Bool(true)}
	ch := &pb.GhostChunkEntry{Len: proto.Uint64(3), Off: proto.Uint64(4096)}
	writeImage(t, d, "ghost-file-2.img", GhostFile, gc, ch, wrapperspb.Bytes([]byte("abc")))
	_, msgs, err = Decode(filepath.Join(d.Path(), "ghost-file-2.img"))
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 3 || !proto.Equal(msgs[1], ch) || string(msgs[2].(*wrapperspb.BytesValue).GetValue()) != "abc" {
		t.Errorf("chunked ghost: %v", msgs)
	}
}

func TestModesAndNames(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)

	path := filepath.Join(t.TempDir(), "a", "img")
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
	d, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("image dir mode %v (%v), want 0700", fi.Mode().Perm(), err)
	}
	writeImage(t, d, "fs-1.img", Fs, &pb.FsEntry{CwdId: proto.Uint32(1), RootId: proto.Uint32(2)})
	if fi, err := os.Stat(filepath.Join(path, "fs-1.img")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("image file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	if _, err := d.NewWriter("fs-1.img", Fs); !errors.Is(err, os.ErrExist) {
		t.Errorf("overwrite: %v, want ErrExist", err)
	}
	p, err := d.CreatePages("pages-1.img")
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if p, err = d.OpenPages("pages-1.img"); err != nil {
		t.Fatal(err)
	}
	p.Close()
	for _, name := range []string{"", ".", "..", "../x.img", "a/b.img"} {
		if _, err := d.NewWriter(name, Fs); !errors.Is(err, os.ErrInvalid) {
			t.Errorf("NewWriter(%q): %v, want ErrInvalid", name, err)
		}
		if _, err := d.NewReader(name, Fs); !errors.Is(err, os.ErrInvalid) {
			t.Errorf("NewReader(%q): %v, want ErrInvalid", name, err)
		}
	}
}

func TestWriteMissingRequired(t *testing.T) {
	d := newDir(t)
	w, err := d.NewWriter("pstree.img", Pstree)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(&pb.PstreeEntry{Pid: proto.Uint32(1)}); err == nil {
		t.Error("wrote a pstree_entry without ppid, pgid, sid")
	}
	if err := w.Close(); err == nil {
		t.Error("Close after a failed Write returned nil")
	}
}

func le32(v ...uint32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, x)
	}
	return b
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

func TestMalformed(t *testing.T) {
	coreHdr := le32(MagicCommon, Core.Magic)
	pst, err := proto.Marshal(pstree(5))
	if err != nil {
		t.Fatal(err)
	}
	partial, err := proto.MarshalOptions{AllowPartial: true}.Marshal(&pb.PstreeEntry{Pid: proto.Uint32(5)})
	if err != nil {
		t.Fatal(err)
	}
	inv, err := proto.Marshal(&pb.InventoryEntry{ImgVersion: proto.Uint32(2)})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		data    []byte
		kind    Kind
		openErr string // substring of NewReader's error; "" if it must succeed
		readErr string // substring of the first Read's error; "" for clean EOF after all entries
		offset  int64
		eof     bool // error wraps io.ErrUnexpectedEOF
		entries int
	}{
		{name: "empty", data: nil, kind: Core, openErr: "read magic", eof: true},
		{name: "short magic", data: le32(MagicCommon)[:3], kind: Core, openErr: "read magic", eof: true},
		{name: "header only", data: coreHdr, kind: Core},
		{name: "bad magic", data: le32(MagicCommon, 0xdeadbeef), kind: Core, openErr: "unknown magic 0xdeadbeef", offset: 4},
		{name: "bad first magic", data: le32(0xdeadbeef, Core.Magic), kind: Core, openErr: "unknown magic 0xdeadbeef"},
		{name: "wrong kind", data: le32(MagicCommon, Pstree.Magic), kind: Core, openErr: "want CORE image, file is a PSTREE image", offset: 4},
		{name: "service prefix", data: le32(MagicService, Core.Magic), kind: Core, openErr: "file has header magic 0x55105940"},
		{name: "missing prefix", data: le32(Core.Magic, 0), kind: Core, openErr: "file has no header magic and is a CORE image"},
		{name: "inventory without prefix", data: cat(le32(Inventory.Magic, uint32(len(inv))), inv), kind: Inventory, entries: 1},
		{name: "inventory with prefix", data: cat(le32(MagicCommon, Inventory.Magic)), kind: Inventory, openErr: "without header magic"},
		{name: "round trip", data: cat(le32(MagicCommon, Pstree.Magic, uint32(len(pst))), pst), kind: Pstree, entries: 1},
		{name: "truncated length", data: cat(le32(MagicCommon, Pstree.Magic), []byte{1, 0}), kind: Pstree, readErr: "truncated entry length", offset: 8, eof: true},
		{name: "truncated payload", data: cat(le32(MagicCommon, Pstree.Magic, uint32(len(pst))), pst[:3]), kind: Pstree, readErr: "truncated entry", offset: 8, eof: true},
		{name: "second entry truncated", data: cat(le32(MagicCommon, Pstree.Magic, uint32(len(pst))), pst, le32(100)), kind: Pstree, entries: 1, readErr: "truncated entry", offset: int64(12 + len(pst)), eof: true},
		{name: "oversized length", data: le32(MagicCommon, Pstree.Magic, MaxEntrySize+1), kind: Pstree, readErr: "exceeds", offset: 8},
		{name: "huge length short file", data: le32(MagicCommon, Pstree.Magic, MaxEntrySize, 1, 2), kind: Pstree, readErr: "truncated entry", offset: 8, eof: true},
		{name: "missing required field", data: cat(le32(MagicCommon, Pstree.Magic, uint32(len(partial))), partial), kind: Pstree, readErr: "decode pstree_entry", offset: 8},
		{name: "garbage payload", data: cat(le32(MagicCommon, Pstree.Magic, 3), []byte{0xff, 0xff, 0xff}), kind: Pstree, readErr: "decode pstree_entry", offset: 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDir(t)
			const name = "core-42.img"
			if err := os.WriteFile(filepath.Join(d.Path(), name), tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			check := func(err error, want string) {
				t.Helper()
				var ie *Error
				if !errors.As(err, &ie) {
					t.Fatalf("error %v is not an *Error", err)
				}
				if ie.File != name || ie.Offset != tt.offset {
					t.Errorf("error names %s offset %d, want %s offset %d", ie.File, ie.Offset, name, tt.offset)
				}
				if prefix := "image core-42.img at offset "; !strings.HasPrefix(err.Error(), prefix) {
					t.Errorf("error %q does not start with %q", err, prefix)
				}
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
				if !errors.Is(err, ErrBadImage) {
					t.Errorf("error %v does not match ErrBadImage", err)
				}
				if got := errors.Is(err, io.ErrUnexpectedEOF); got != tt.eof {
					t.Errorf("errors.Is(%v, io.ErrUnexpectedEOF) = %v, want %v", err, got, tt.eof)
				}
			}

			r, err := d.NewReader(name, tt.kind)
			if tt.openErr != "" {
				if err == nil {
					r.Close()
					t.Fatal("NewReader succeeded")
				}
				check(err, tt.openErr)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			n := 0
			for {
				m := kindsByMagic[tt.kind.Magic].newEntry()
				err = r.Read(m)
				if err != nil {
					break
				}
				n++
			}
			if n != tt.entries {
				t.Errorf("read %d entries, want %d", n, tt.entries)
			}
			if tt.readErr == "" {
				if err != io.EOF { //nolint:errorlint // must be io.EOF itself
					t.Errorf("Read: %v, want io.EOF", err)
				}
				return
			}
			check(err, tt.readErr)

			// Decode sees the same problem.
			if _, _, err := Decode(filepath.Join(d.Path(), name)); err == nil || !errors.Is(err, ErrBadImage) {
				t.Errorf("Decode: %v, want ErrBadImage", err)
			}
		})
	}
}

func TestReadRawLimits(t *testing.T) {
	d := newDir(t)
	writeImage(t, d, "pipes-data.img", PipesData, wrapperspb.Bytes([]byte{1, 2, 3}))
	r, err := d.NewReader("pipes-data.img", PipesData)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, n := range []int{-1, MaxEntrySize + 1} {
		if _, err := r.ReadRaw(n); !errors.Is(err, ErrBadImage) {
			t.Errorf("ReadRaw(%d): %v, want ErrBadImage", n, err)
		}
	}
	if _, err := r.ReadRaw(4); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("ReadRaw past end: %v, want ErrUnexpectedEOF", err)
	}
}

// FuzzReader feeds arbitrary files to Decode and to a typed reader: no
// panic, no allocation beyond MaxEntrySize, and every failure an *Error.
func FuzzReader(f *testing.F) {
	d, err := Create(filepath.Join(f.TempDir(), "seed"))
	if err != nil {
		f.Fatal(err)
	}
	defer d.Close()
	seeds := []struct {
		name    string
		kind    Kind
		entries []proto.Message
	}{
		{"inventory.img", Inventory, []proto.Message{&pb.InventoryEntry{ImgVersion: proto.Uint32(2), RootIds: &pb.TaskKobjIdsEntry{VmId: proto.Uint32(1), FilesId: proto.Uint32(2), FsId: proto.Uint32(3), SighandId: proto.Uint32(4)}}}},
		{"pstree.img", Pstree, []proto.Message{pstree(1), pstree(2)}},
		{"pagemap.img", Pagemap, []proto.Message{&pb.PagemapHead{PagesId: proto.Uint32(1)}, &pb.PagemapEntry{Vaddr: proto.Uint64(4096), NrPages: proto.Uint32(1)}}},
		{"pipes-data.img", PipesData, []proto.Message{&pb.PipeDataEntry{PipeId: proto.Uint32(1), Bytes: proto.Uint32(2)}, wrapperspb.Bytes([]byte("xy"))}},
		{"sk-queues.img", SkQueues, []proto.Message{&pb.SkPacketEntry{IdFor: proto.Uint32(1), Length: proto.Uint32(1)}, wrapperspb.Bytes([]byte("z"))}},
		{"ghost.img", GhostFile, []proto.Message{&pb.GhostFileEntry{Uid: proto.Uint32(0), Gid: proto.Uint32(0), Mode: proto.Uint32(0o600), Chunks: proto.Bool(true)}, &pb.GhostChunkEntry{Len: proto.Uint64(1), Off: proto.Uint64(0)}, wrapperspb.Bytes([]byte("g"))}},
		{"crhook-task.img", CrhookTask, []proto.Message{&pb.CrhookTaskEntry{Pid: proto.Uint32(1), Threads: []*pb.CrhookThreadEntry{{Tid: proto.Uint32(1), Xsave: make([]byte, 64)}}}}},
	}
	for _, s := range seeds {
		w, err := d.NewWriter(s.name, s.kind)
		if err != nil {
			f.Fatal(err)
		}
		for _, m := range s.entries {
			if b, ok := m.(*wrapperspb.BytesValue); ok {
				err = w.WriteRaw(b.GetValue())
			} else {
				err = w.Write(m)
			}
			if err != nil {
				f.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			f.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(d.Path(), s.name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add(le32(MagicCommon, Pstree.Magic, MaxEntrySize))
	f.Add(le32(MagicCommon, PipesData.Magic, 4, 0x08, 0xffffffff))

	f.Fuzz(func(t *testing.T, data []byte) {
		r := newReader(bytes.NewReader(data), "fuzz.img", nil)
		if _, _, err := r.decodeAll(); err != nil {
			var ie *Error
			if !errors.As(err, &ie) || ie.File != "fuzz.img" || ie.Offset < 0 || ie.Offset > int64(len(data)) {
				t.Fatalf("Decode error %v (%T) does not name the file and an offset within it", err, err)
			}
		}

		r = newReader(bytes.NewReader(data), "fuzz.img", nil)
		if err := r.expect(Core); err != nil {
			return
		}
		for {
			err := r.Read(&pb.CoreEntry{})
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				var ie *Error
				if !errors.As(err, &ie) {
					t.Fatalf("Read error %v is not an *Error", err)
				}
				return
			}
		}
	})
}
