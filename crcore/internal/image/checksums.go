package image

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/crhook/crhook/crcore/internal/crc"
)

// ChecksumsFile is the image that lists every other image file of a
// directory with its size and CRC32-Castagnoli. A dump writes it last; a
// restore verifies it before it creates anything.
const ChecksumsFile = "crhook-checksums.img"

// CrhookChecksums is the kind of ChecksumsFile. Its entries are
// crhook.ChecksumEntry {string name = 1; uint64 size = 2; fixed32 crc32c
// = 3}, described here rather than in proto/ so that the checksum layer
// depends on nothing the image schema may change.
var CrhookChecksums = Kind{"CRHOOK_CHECKSUMS", 0x4b4f4820, MagicCommon}

// checksumDesc is the message descriptor of a checksum entry.
var checksumDesc = func() protoreflect.MessageDescriptor {
	fd := &descriptorpb.FileDescriptorProto{
		Name:    proto.String("crhook-checksums.proto"),
		Package: proto.String("crhook"),
		Syntax:  proto.String("proto2"),
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("ChecksumEntry"),
			Field: []*descriptorpb.FieldDescriptorProto{
				{Name: proto.String("name"), Number: proto.Int32(1), Label: descriptorpb.FieldDescriptorProto_LABEL_REQUIRED.Enum(), Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(), JsonName: proto.String("name")},
				{Name: proto.String("size"), Number: proto.Int32(2), Label: descriptorpb.FieldDescriptorProto_LABEL_REQUIRED.Enum(), Type: descriptorpb.FieldDescriptorProto_TYPE_UINT64.Enum(), JsonName: proto.String("size")},
				{Name: proto.String("crc32c"), Number: proto.Int32(3), Label: descriptorpb.FieldDescriptorProto_LABEL_REQUIRED.Enum(), Type: descriptorpb.FieldDescriptorProto_TYPE_FIXED32.Enum(), JsonName: proto.String("crc32c")},
			},
		}},
	}
	f, err := protodesc.NewFile(fd, nil)
	if err != nil {
		panic("image: checksum descriptor: " + err.Error())
	}
	return f.Messages().Get(0)
}()

func init() {
	// Known to Decode (crhook show, the fuzzers) like every other kind.
	ki := &kindInfo{kind: CrhookChecksums, newEntry: func() proto.Message { return dynamicpb.NewMessage(checksumDesc) }}
	if _, dup := kindsByMagic[ki.kind.Magic]; dup {
		panic("image: duplicate magic for " + ki.kind.Name)
	}
	kindsByMagic[ki.kind.Magic] = ki
}

// Checksum is one file's entry in ChecksumsFile.
type Checksum struct {
	Name   string
	Size   uint64
	CRC32C uint32
}

func (c Checksum) message() proto.Message {
	m := dynamicpb.NewMessage(checksumDesc)
	f := checksumDesc.Fields()
	m.Set(f.ByNumber(1), protoreflect.ValueOfString(c.Name))
	m.Set(f.ByNumber(2), protoreflect.ValueOfUint64(c.Size))
	m.Set(f.ByNumber(3), protoreflect.ValueOfUint32(c.CRC32C))
	return m
}

func checksumOf(m *dynamicpb.Message) Checksum {
	f := checksumDesc.Fields()
	return Checksum{
		Name:   m.Get(f.ByNumber(1)).String(),
		Size:   m.Get(f.ByNumber(2)).Uint(),
		CRC32C: uint32(m.Get(f.ByNumber(3)).Uint()),
	}
}

// MaxChecksumEntries caps the entries ReadChecksums accepts: far more
// files than any dump writes.
const MaxChecksumEntries = 1 << 20

// sumChunk is the most of a file one worker sums at a time.
const sumChunk = 16 << 20

// sumFiles returns the CRC32C of each file, whose sizes sums give. The
// files are cut into chunks summed by one worker per CPU (at most 4),
// and each file's chunks combined in order: a restore of a 2 GiB image
// verified it at the speed of one core before.
//
// A file of at most holdMax bytes is read whole into a buffer of its
// own, returned in held (by index) for the caller to keep.
func sumFiles(files []*os.File, sums []Checksum) (crcs []uint32, held [][]byte, err error) {
	type chunk struct {
		file     int
		off, len uint64
	}
	var chunks []chunk
	first := make([]int, len(files)) // index of each file's first chunk
	for i, c := range sums {
		first[i] = len(chunks)
		for off := uint64(0); off < c.Size; off += sumChunk {
			chunks = append(chunks, chunk{i, off, min(sumChunk, c.Size-off)})
		}
	}
	out := make([]uint32, len(chunks))
	errs := make([]error, len(chunks))
	held = make([][]byte, len(files))
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for range max(1, min(runtime.GOMAXPROCS(0), 4)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bp := sumBufs.Get().(*[]byte)
			defer sumBufs.Put(bp)
			buf := *bp
			for {
				k := int(next.Add(1) - 1)
				if k >= len(chunks) {
					return
				}
				ch := chunks[k]
				if size := sums[ch.file].Size; size <= holdMax {
					b := make([]byte, size)
					if _, err := files[ch.file].ReadAt(b, 0); err != nil && (!errors.Is(err, io.EOF) || size != 0) {
						errs[k] = fmt.Errorf("verify image %s: %w", sums[ch.file].Name, err)
						continue
					}
					out[k], held[ch.file] = crc.Update(0, b), b
					continue
				}
				var c uint32
				for done := uint64(0); done < ch.len; {
					n := min(uint64(len(buf)), ch.len-done)
					if _, err := files[ch.file].ReadAt(buf[:n], int64(ch.off+done)); err != nil {
						errs[k] = fmt.Errorf("verify image %s: %w", sums[ch.file].Name, err)
						break
					}
					c = crc.Update(c, buf[:n])
					done += n
				}
				out[k] = c
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, nil, err
		}
	}
	crcs = make([]uint32, len(files))
	for i := range files {
		end := len(chunks)
		if i+1 < len(files) {
			end = first[i+1]
		}
		var c uint32
		for k := first[i]; k < end; k++ {
			c = crc.Combine(c, out[k], chunks[k].len)
		}
		crcs[i] = c
	}
	return crcs, held, nil
}

var sumBufs = sync.Pool{New: func() any {
	b := make([]byte, 1<<20)
	return &b
}}

// sumFile reads the whole of f and returns its size and CRC32C.
func sumFile(f *os.File) (uint64, uint32, error) {
	// One buffer for every file: a directory holds thousands of small
	// images, and a fresh megabyte each was most of a verify's time.
	bp := sumBufs.Get().(*[]byte)
	defer sumBufs.Put(bp)
	buf := *bp
	var n uint64
	var c uint32
	for {
		k, err := f.Read(buf)
		c = crc.Update(c, buf[:k])
		n += uint64(k)
		if err == io.EOF {
			return n, c, nil
		}
		if err != nil {
			return 0, 0, err
		}
	}
}

// imageNames lists the directory's regular *.img files but the checksum
// file, sorted. Anything else in the directory (a runtime's metadata) is
// not an image: no restore reads it.
func (d *Dir) imageNames() ([]string, error) {
	f, err := d.root.Open(".")
	if err != nil {
		return nil, fmt.Errorf("list image dir: %w", err)
	}
	defer f.Close()
	ents, err := f.ReadDir(-1)
	if err != nil {
		return nil, fmt.Errorf("list image dir %s: %w", d.path, err)
	}
	var names []string
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".img") || e.Name() == ChecksumsFile {
			continue
		}
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names, nil
}

// WriteChecksums sums every image file of the directory and writes
// ChecksumsFile. Call it after every other image is closed.
func (d *Dir) WriteChecksums() error {
	names, err := d.imageNames()
	if err != nil {
		return err
	}
	sums := make([]Checksum, 0, len(names))
	for _, n := range names {
		if c, ok := d.recorded(n); ok {
			// Summed as it was written; a size that changed since
			// means something else wrote it: read it after all.
			if st, err := d.root.Stat(n); err == nil && uint64(st.Size()) == c.Size {
				sums = append(sums, c)
				continue
			}
		}
		f, err := d.open(n)
		if err != nil {
			return fmt.Errorf("checksum %s: %w", n, err)
		}
		size, crc, err := sumFile(f)
		_ = f.Close()
		if err != nil {
			return fmt.Errorf("checksum %s: %w", n, err)
		}
		sums = append(sums, Checksum{Name: n, Size: size, CRC32C: crc})
	}
	w, err := d.NewWriter(ChecksumsFile, CrhookChecksums)
	if err != nil {
		return err
	}
	for _, c := range sums {
		if err := w.Write(c.message()); err != nil {
			_ = w.Close()
			return err
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	// Durable before the caller kills the dumped tree.
	f, err := d.open(ChecksumsFile)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return &Error{File: ChecksumsFile, Offset: 0, Err: err}
	}
	return nil
}

// ReadChecksums reads ChecksumsFile.
func (d *Dir) ReadChecksums() ([]Checksum, error) {
	r, err := d.NewReader(ChecksumsFile, CrhookChecksums)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out []Checksum
	seen := map[string]bool{}
	for {
		m := dynamicpb.NewMessage(checksumDesc)
		err := r.Read(m)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		c := checksumOf(m)
		if err := checkName(c.Name); err != nil || !strings.HasSuffix(c.Name, ".img") || c.Name == ChecksumsFile {
			return nil, r.errAt(r.start, badf("entry names %q, not an image file", c.Name))
		}
		if seen[c.Name] {
			return nil, r.errAt(r.start, badf("%s listed twice", c.Name))
		}
		if len(out) >= MaxChecksumEntries {
			return nil, r.errAt(r.start, badf("more than %d entries", MaxChecksumEntries))
		}
		seen[c.Name] = true
		out = append(out, c)
	}
}

// ChecksumError says which file of an image directory does not match its
// checksum (or is missing, or is not listed).
type ChecksumError struct {
	File   string
	Reason string
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("image %s: %s", e.File, e.Reason)
}

// Unwrap makes a ChecksumError match ErrBadImage.
func (e *ChecksumError) Unwrap() error { return ErrBadImage }

// VerifyChecksums checks every file ChecksumsFile lists, and that no image
// file is missing from the list. The first failure names its file. A
// directory without ChecksumsFile fails too: every dump writes one.
func (d *Dir) VerifyChecksums() error {
	_, err := d.VerifyChecksumsExcept(nil)
	return err
}

// VerifyChecksumsExcept is VerifyChecksums but for the contents of the
// files later names (when not nil): those are checked to exist as
// regular files of the listed size, and their entries returned, for the
// caller to check their contents as it reads them (VerifyListed, or
// summing what it reads).
func (d *Dir) VerifyChecksumsExcept(later func(name string) bool) ([]Checksum, error) {
	sums, err := d.ReadChecksums()
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, &ChecksumError{File: ChecksumsFile, Reason: "missing: not a complete crhook dump (or one from before checksums)"}
		}
		return nil, err
	}
	files, err := d.openListed(sums)
	defer func() {
		for _, f := range files {
			_ = f.Close()
		}
	}()
	if err != nil {
		return nil, err
	}
	listed := map[string]bool{}
	var deferred, now []Checksum
	var nowFiles []*os.File
	for i, c := range sums {
		listed[c.Name] = true
		if later != nil && later(c.Name) {
			deferred = append(deferred, c)
		} else {
			now, nowFiles = append(now, c), append(nowFiles, files[i])
		}
	}
	if err := d.compareSums(nowFiles, now); err != nil {
		return nil, err
	}
	names, err := d.imageNames()
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		if !listed[n] {
			return nil, &ChecksumError{File: n, Reason: "not listed in " + ChecksumsFile + ": added after the dump"}
		}
	}
	return deferred, nil
}

// VerifyListed checks the contents of the files sums lists (entries of
// ChecksumsFile) against their checksums.
func (d *Dir) VerifyListed(sums []Checksum) error {
	files, err := d.openListed(sums)
	defer func() {
		for _, f := range files {
			_ = f.Close()
		}
	}()
	if err != nil {
		return err
	}
	return d.compareSums(files, sums)
}

// compareSums sums files and compares each with its entry in sums; the
// small ones found good are held for NewReader.
func (d *Dir) compareSums(files []*os.File, sums []Checksum) error {
	crcs, held, err := sumFiles(files, sums)
	if err != nil {
		return err
	}
	for i, c := range sums {
		if crcs[i] != c.CRC32C {
			return MismatchError(c, crcs[i])
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.held == nil {
		d.held = map[string][]byte{}
	}
	for i, c := range sums {
		if held[i] != nil {
			d.held[c.Name] = held[i]
		}
	}
	return nil
}

// MismatchError is the error for a file whose contents sum to got
// instead of c's checksum.
func MismatchError(c Checksum, got uint32) error {
	return &ChecksumError{File: c.Name, Reason: fmt.Sprintf("checksum mismatch (crc32c %08x, the dump wrote %08x): the file is corrupt", got, c.CRC32C)}
}

// openListed opens the files sums lists, each checked to be a regular
// file of the listed size. The caller closes the files returned, also on
// error.
func (d *Dir) openListed(sums []Checksum) ([]*os.File, error) {
	files := make([]*os.File, 0, len(sums))
	for _, c := range sums {
		f, err := d.root.OpenFile(c.Name, os.O_RDONLY|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, 0)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return files, &ChecksumError{File: c.Name, Reason: "missing"}
			}
			return files, fmt.Errorf("verify image %s: %w", c.Name, err)
		}
		files = append(files, f)
		fi, err := f.Stat()
		if err != nil {
			return files, fmt.Errorf("verify image %s: %w", c.Name, err)
		}
		if !fi.Mode().IsRegular() {
			return files, &ChecksumError{File: c.Name, Reason: "not a regular file"}
		}
		if uint64(fi.Size()) != c.Size {
			return files, &ChecksumError{File: c.Name, Reason: fmt.Sprintf("size %d, the dump wrote %d", fi.Size(), c.Size)}
		}
	}
	return files, nil
}

// SumPath returns the size and CRC32C of the file at path (for tests and
// tools).
func SumPath(path string) (uint64, uint32, error) {
	f, err := os.Open(filepath.Clean(path))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	return sumFile(f)
}
