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

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/crhook/crhook/crcore/internal/crc"
	"golang.org/x/sys/unix"
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

// verifyFiles checks the files sums lists: each must be a regular file
// of the listed size in the directory, and, where sum[i], its contents
// must have the listed CRC32C. Large files are cut into chunks summed by
// one worker per CPU (at most 4), and each file's chunks combined in
// order: a restore of a 2 GiB image verified it at the speed of one core
// before. A summed file of at most holdMax bytes is read whole into a
// buffer of its own, returned in held (by index) for the caller to keep.
//
// Each worker opens the files of its chunks itself, with plain openat2,
// fstat, pread and close (rawFile): a tree's dump is thousands of small
// images, and opening them one after the other as os.Files (which try
// the runtime's poller on each) was the serial part of a restore's load.
// The first error in sums' order is returned: a missing or misshapen
// file before any mismatch.
func (d *Dir) verifyFiles(sums []Checksum, sum []bool) (held [][]byte, err error) {
	type chunk struct {
		file     int
		off, len uint64
	}
	var chunks []chunk
	first := make([]int, len(sums)) // index of each file's first chunk
	for i, c := range sums {
		first[i] = len(chunks)
		chunks = append(chunks, chunk{i, 0, min(sumChunk, c.Size)})
		if !sum[i] {
			chunks[len(chunks)-1].len = 0
			continue
		}
		for off := uint64(sumChunk); off < c.Size; off += sumChunk {
			chunks = append(chunks, chunk{i, off, min(sumChunk, c.Size-off)})
		}
	}
	out := make([]uint32, len(chunks))
	shapeErrs := make([]error, len(sums)) // missing, not regular, wrong size
	errs := make([]error, len(chunks))
	held = make([][]byte, len(sums))
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
				c := sums[ch.file]
				f, err := d.openRaw(c)
				if ch.off == 0 && err != nil {
					var ce *ChecksumError
					if errors.As(err, &ce) {
						shapeErrs[ch.file] = err
					} else {
						errs[k] = err
					}
					continue
				}
				if err != nil {
					errs[k] = err // reported for the file's first chunk
					continue
				}
				if !sum[ch.file] {
					f.close()
					continue
				}
				if c.Size <= holdMax {
					b := make([]byte, c.Size)
					if err := f.readAt(b, 0); err != nil {
						errs[k] = fmt.Errorf("verify image %s: %w", c.Name, err)
					} else {
						out[k], held[ch.file] = crc.Update(0, b), b
					}
					f.close()
					continue
				}
				var sum uint32
				for done := uint64(0); done < ch.len; {
					n := min(uint64(len(buf)), ch.len-done)
					if err := f.readAt(buf[:n], ch.off+done); err != nil {
						errs[k] = fmt.Errorf("verify image %s: %w", c.Name, err)
						break
					}
					sum = crc.Update(sum, buf[:n])
					done += n
				}
				out[k] = sum
				f.close()
			}
		}()
	}
	wg.Wait()
	for _, err := range shapeErrs {
		if err != nil {
			return nil, err
		}
	}
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	for i, c := range sums {
		if !sum[i] {
			continue
		}
		end := len(chunks)
		if i+1 < len(sums) {
			end = first[i+1]
		}
		var got uint32
		for k := first[i]; k < end; k++ {
			got = crc.Combine(got, out[k], chunks[k].len)
		}
		if got != c.CRC32C {
			return nil, MismatchError(c, got)
		}
	}
	return held, nil
}

// rawFile is an image file opened with plain syscalls (verifyFiles), or,
// where the kernel refuses openat2, through the os.Root (os).
type rawFile struct {
	fd   int
	name string
	os   *os.File
}

// openRaw opens the file c names, beneath the directory and through no
// symlink, and checks it is a regular file of c's size: a
// *ChecksumError if not.
func (d *Dir) openRaw(c Checksum) (rawFile, error) {
	f := rawFile{fd: -1, name: c.Name}
	var err error = unix.ENOSYS
	for d.fd >= 0 {
		f.fd, err = unix.Openat2(d.fd, c.Name, &unix.OpenHow{
			Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOFOLLOW,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		})
		if !errors.Is(err, unix.EINTR) && !errors.Is(err, unix.EAGAIN) {
			break
		}
	}
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
		// No openat2 here (before 5.6, or a seccomp filter).
		// The os.Root follows a symlink that stays inside it; an image
		// is never one.
		if fi, lerr := d.root.Lstat(c.Name); lerr == nil && fi.Mode()&os.ModeSymlink != 0 {
			return f, &ChecksumError{File: c.Name, Reason: "not a regular file"}
		}
		f.os, err = d.root.OpenFile(c.Name, os.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
		if err == nil {
			f.fd = int(f.os.Fd())
		}
	}
	switch {
	case errors.Is(err, unix.ENOENT):
		return f, &ChecksumError{File: c.Name, Reason: "missing"}
	case errors.Is(err, unix.ELOOP):
		return f, &ChecksumError{File: c.Name, Reason: "not a regular file"}
	case err != nil:
		if f.os == nil {
			err = os.NewSyscallError("openat2", err)
		}
		return f, fmt.Errorf("verify image %s: %w", c.Name, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		f.close()
		return f, fmt.Errorf("verify image %s: %w", c.Name, os.NewSyscallError("fstat", err))
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.close()
		return f, &ChecksumError{File: c.Name, Reason: "not a regular file"}
	}
	if uint64(st.Size) != c.Size {
		f.close()
		return f, &ChecksumError{File: c.Name, Reason: fmt.Sprintf("size %d, the dump wrote %d", st.Size, c.Size)}
	}
	return f, nil
}

// readAt fills b from offset off.
func (f rawFile) readAt(b []byte, off uint64) error {
	for len(b) > 0 {
		n, err := unix.Pread(f.fd, b, int64(off))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("pread", err)
		}
		if n == 0 {
			return io.ErrUnexpectedEOF
		}
		b, off = b[n:], off+uint64(n)
	}
	return nil
}

func (f rawFile) close() {
	if f.os != nil {
		_ = f.os.Close()
		return
	}
	_ = unix.Close(f.fd)
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
	listed := map[string]bool{}
	var deferred []Checksum
	sum := make([]bool, len(sums))
	for i, c := range sums {
		listed[c.Name] = true
		if later != nil && later(c.Name) {
			deferred = append(deferred, c)
		} else {
			sum[i] = true
		}
	}
	if err := d.compareSums(sums, sum); err != nil {
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
	sum := make([]bool, len(sums))
	for i := range sum {
		sum[i] = true
	}
	return d.compareSums(sums, sum)
}

// compareSums checks the files sums lists (verifyFiles; contents where
// sum[i]); the small ones found good are held for NewReader.
func (d *Dir) compareSums(sums []Checksum, sum []bool) error {
	held, err := d.verifyFiles(sums, sum)
	if err != nil {
		return err
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
