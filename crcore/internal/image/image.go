// Package image owns the on-disk framing of a checkpoint: an image
// directory of CRIU-format image files plus raw page files.
//
// The model is CRIU's. An image file starts with a header magic
// (MagicCommon, or MagicService for CRIU's service images; none for the
// inventory) and the magic of its Kind, then holds entries, each a u32
// little-endian length and that many bytes of protobuf (package
// github.com/crhook/crhook/proto). Some kinds put raw bytes after an entry
// (PIPES_DATA, FIFO_DATA, SK_QUEUES) or after all entries (GHOST_FILE); a
// pagemap image's first entry is a pagemap_head. A pages file holds raw
// page data with no header at all.
//
// Images are input from outside on restore and are decoded as hostile:
// every read is io.ReadFull, every length is checked against
// MaxEntrySize before anything is allocated, and every error is an *Error
// naming the file and the offset; malformed contents also match
// ErrBadImage.
package image

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore/internal/crc"
)

// MaxEntrySize caps one entry's length prefix, and any raw blob, so that a
// hostile length cannot make a reader allocate without bound. CRIU's
// largest entries (a core_entry, an mm_entry with thousands of VMAs) are
// far below it.
const MaxEntrySize = 64 << 20

// ErrBadImage matches (errors.Is) every error caused by malformed image
// contents, as opposed to I/O errors.
var ErrBadImage = errors.New("bad image")

// Error is an error reading or writing an image file. File is the image's
// name within its directory (or the path given to Decode); Offset is the
// byte offset of the header or of the entry being processed.
type Error struct {
	File   string
	Offset int64
	Err    error
}

func (e *Error) Error() string {
	return fmt.Sprintf("image %s at offset %d: %v", e.File, e.Offset, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// badf returns an error matching ErrBadImage. Its %w verbs may wrap
// further errors (e.g. io.ErrUnexpectedEOF).
func badf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadImage}, args...)...)
}

// Dir is an image directory. Files are opened through an os.Root, so a
// name can never reach outside the directory.
type Dir struct {
	path string
	root *os.Root
	fd   int // the directory, O_PATH, for openRaw

	mu sync.Mutex
	// sums holds the checksums of files written through this Dir, taken
	// as their bytes went out, so that WriteChecksums need not read them
	// back.
	sums map[string]Checksum
	// held: the contents of small files VerifyChecksums read and found
	// good; NewReader decodes those bytes instead of the file, so a
	// restore reads each image once and decodes exactly what it checked.
	held map[string][]byte
}

// holdMax is the largest file VerifyChecksums keeps in memory.
const holdMax = 64 << 10

// RecordChecksum notes the size and CRC32C of file name as its writer
// computed them. WriteChecksums uses it when the file still has that
// size, and reads the file otherwise.
func (d *Dir) RecordChecksum(name string, size uint64, crc uint32) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sums == nil {
		d.sums = map[string]Checksum{}
	}
	d.sums[name] = Checksum{Name: name, Size: size, CRC32C: crc}
}

func (d *Dir) recorded(name string) (Checksum, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.sums[name]
	return c, ok
}

// Create makes path (and its parents) an image directory with mode 0700
// and opens it. Existing files in it are not touched; writers refuse to
// overwrite them.
func Create(path string) (*Dir, error) {
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("create image dir: %w", err)
	}
	// MkdirAll leaves an existing directory's mode alone, and the umask
	// applies to a new one.
	if err := os.Chmod(path, 0o700); err != nil { //nolint:gosec // a directory: 0700 is owner-only, search needs the x bits
		return nil, fmt.Errorf("create image dir: %w", err)
	}
	return OpenDir(path)
}

// OpenDir opens an existing image directory.
func OpenDir(path string) (*Dir, error) {
	root, err := os.OpenRoot(path)
	if err != nil {
		return nil, fmt.Errorf("open image dir: %w", err)
	}
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = root.Close()
		return nil, fmt.Errorf("open image dir: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	// Both must be the one directory, whatever path names meanwhile.
	var st unix.Stat_t
	fi, err := root.Stat(".")
	if err == nil {
		err = unix.Fstat(fd, &st)
	}
	if err == nil {
		if rs, ok := fi.Sys().(*syscall.Stat_t); !ok || rs.Dev != st.Dev || rs.Ino != st.Ino {
			err = errors.New("it changed while being opened")
		}
	}
	if err != nil {
		_ = root.Close()
		_ = unix.Close(fd)
		return nil, fmt.Errorf("open image dir %s: %w", path, err)
	}
	return &Dir{path: path, root: root, fd: fd}, nil
}

// Path returns the directory's path as given to Create or OpenDir.
func (d *Dir) Path() string { return d.path }

// Close releases the directory. Writers and readers already open stay
// usable.
func (d *Dir) Close() error {
	err := d.root.Close()
	if d.fd >= 0 {
		_ = unix.Close(d.fd)
		d.fd = -1
	}
	return err
}

// checkName allows only plain file names: the image layout is flat.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') || strings.ContainsRune(name, 0) {
		return fmt.Errorf("image name %q: %w", name, os.ErrInvalid)
	}
	return nil
}

func (d *Dir) create(name string) (*os.File, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if f, ok := d.openat2(name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600); ok {
		return f, nil
	}
	return d.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_CLOEXEC, 0o600)
}

func (d *Dir) open(name string) (*os.File, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if f, ok := d.openat2(name, unix.O_RDONLY|unix.O_CLOEXEC, 0); ok {
		return f, nil
	}
	return d.root.OpenFile(name, os.O_RDONLY|syscall.O_CLOEXEC, 0)
}

// openat2 opens name beneath the directory, through no symlink, as a
// file os.NewFile wraps: that costs one fcntl, where an os.Root opens
// each file as the runtime's poller's, which a regular file is not (four
// fcntl and an epoll_ctl more); a restore of a tree opens one image file
// a task at least on its tracer's thread. ok is false when the kernel
// refuses openat2 itself (before 5.6, or a seccomp filter): the caller
// falls back to the os.Root. Any other error is the open's: returned by
// the fallback too.
func (d *Dir) openat2(name string, flags int, mode uint32) (*os.File, bool) {
	if d.fd < 0 {
		return nil, false
	}
	for {
		fd, err := unix.Openat2(d.fd, name, &unix.OpenHow{
			Flags:   uint64(flags) | unix.O_NOFOLLOW,
			Mode:    uint64(mode),
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		})
		switch err {
		case nil:
			return os.NewFile(uintptr(fd), d.path+"/"+name), true
		case unix.EINTR, unix.EAGAIN:
			continue
		}
		return nil, false
	}
}

// CreatePages creates a raw pages file (no header), mode 0600, write-only.
func (d *Dir) CreatePages(name string) (*os.File, error) { return d.create(name) }

// OpenPages opens a raw pages file for reading.
func (d *Dir) OpenPages(name string) (*os.File, error) { return d.open(name) }

// Writer appends entries to a new image file. It is buffered: the data is
// on disk only after Close returns nil.
type Writer struct {
	name string
	dir  *Dir
	f    *os.File
	bw   *bufio.Writer
	off  int64
	crc  uint32 // of the bytes written so far
	err  error  // sticky: the first failure
}

// NewWriter creates image file name of kind k (O_EXCL, mode 0600) and
// writes its header.
func (d *Dir) NewWriter(name string, k Kind) (*Writer, error) {
	f, err := d.create(name)
	if err != nil {
		return nil, fmt.Errorf("create image: %w", err)
	}
	w := &Writer{name: name, dir: d, f: f, bw: getBufWriter(f)}
	var hdr []byte
	if k.Prefix != 0 {
		hdr = binary.LittleEndian.AppendUint32(hdr, k.Prefix)
	}
	hdr = binary.LittleEndian.AppendUint32(hdr, k.Magic)
	if err := w.WriteRaw(hdr); err != nil {
		_ = f.Close()
		return nil, err
	}
	return w, nil
}

// bufWriters keeps the writers' 64 KiB buffers for the next image: a
// dump of a tree writes thousands of small images, and a fresh buffer
// each (a page fault a page on first use, about a millisecond a megabyte
// on this machine kind) was most of the time it spent writing them. Not
// a sync.Pool, which a garbage collection empties.
var bufWriters = make(chan *bufio.Writer, 4)

func getBufWriter(f io.Writer) *bufio.Writer {
	select {
	case bw := <-bufWriters:
		bw.Reset(f)
		return bw
	default:
		return bufio.NewWriterSize(f, 64<<10)
	}
}

func putBufWriter(bw *bufio.Writer) {
	bw.Reset(nil)
	select {
	case bufWriters <- bw:
	default:
	}
}

func (w *Writer) fail(err error) error {
	w.err = &Error{File: w.name, Offset: w.off, Err: err}
	return w.err
}

// Write appends m as one entry. m must have every required field set:
// CRIU's decoder rejects an entry that lacks one.
func (w *Writer) Write(m proto.Message) error {
	if w.err != nil {
		return w.err
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return w.fail(fmt.Errorf("marshal %s: %w", m.ProtoReflect().Descriptor().Name(), err))
	}
	if len(b) > MaxEntrySize {
		return w.fail(fmt.Errorf("entry of %d bytes exceeds %d", len(b), MaxEntrySize))
	}
	var hdr [4]byte
	binary.LittleEndian.PutUint32(hdr[:], uint32(len(b)))
	if err := w.WriteRaw(hdr[:]); err != nil {
		return err
	}
	return w.WriteRaw(b)
}

// WriteRaw appends b as is, for the raw data some kinds put after an entry.
func (w *Writer) WriteRaw(b []byte) error {
	if w.err != nil {
		return w.err
	}
	if w.bw == nil {
		return w.fail(os.ErrClosed)
	}
	n, err := w.bw.Write(b)
	if err != nil {
		return w.fail(err)
	}
	w.crc = crc.Update(w.crc, b)
	w.off += int64(n)
	return nil
}

// Close flushes and closes the file. It reports the first error of any
// earlier Write.
func (w *Writer) Close() error {
	if w.f == nil {
		return w.err
	}
	if w.err == nil {
		if err := w.bw.Flush(); err != nil {
			_ = w.fail(err) // kept in w.err, returned below
		}
	}
	if err := w.f.Close(); err != nil && w.err == nil {
		_ = w.fail(err)
	}
	w.f = nil
	putBufWriter(w.bw)
	w.bw = nil
	if w.err == nil {
		w.dir.RecordChecksum(w.name, uint64(w.off), w.crc)
	}
	return w.err
}

// Reader reads the entries of one image file.
type Reader struct {
	name  string
	c     io.Closer
	br    *bufio.Reader
	off   int64
	buf   []byte
	start int64 // offset of the entry being read, for errors
}

// NewReader opens image file name and checks that it is of kind k.
func (d *Dir) NewReader(name string, k Kind) (*Reader, error) {
	d.mu.Lock()
	b, ok := d.held[name]
	d.mu.Unlock()
	if ok {
		r := newReaderSize(bytes.NewReader(b), name, io.NopCloser(nil), max(len(b), 16))
		if err := r.expect(k); err != nil {
			return nil, err
		}
		return r, nil
	}
	f, err := d.open(name)
	if err != nil {
		return nil, fmt.Errorf("open image: %w", err)
	}
	r := newReaderSize(f, name, f, readerBufSize(f))
	if err := r.expect(k); err != nil {
		_ = f.Close()
		return nil, err
	}
	return r, nil
}

func newReader(rd io.Reader, name string, c io.Closer) *Reader {
	return newReaderSize(rd, name, c, 64<<10)
}

func newReaderSize(rd io.Reader, name string, c io.Closer, size int) *Reader {
	return &Reader{name: name, c: c, br: bufio.NewReaderSize(rd, size)}
}

// readerBufSize is 64 KiB, or less for a smaller file: a tree's dump is
// thousands of images of a few hundred bytes.
func readerBufSize(f *os.File) int {
	if st, err := f.Stat(); err == nil && st.Size() < 64<<10 {
		return max(int(st.Size())+16, 256)
	}
	return 64 << 10
}

// Close closes the file.
func (r *Reader) Close() error {
	if r.c == nil {
		return nil
	}
	err := r.c.Close()
	r.c = nil
	return err
}

func (r *Reader) errAt(off int64, err error) error {
	return &Error{File: r.name, Offset: off, Err: err}
}

func (r *Reader) u32() (uint32, error) {
	var b [4]byte
	n, err := io.ReadFull(r.br, b[:])
	r.off += int64(n)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b[:]), nil
}

func describeMagic(m uint32) string {
	if k, ok := KindByMagic(m); ok {
		return fmt.Sprintf("a %s image (magic 0x%08x)", k.Name, m)
	}
	return fmt.Sprintf("unknown magic 0x%08x", m)
}

// header reads the magics and returns the kind they name.
func (r *Reader) header() (Kind, error) {
	m, err := r.u32()
	if err != nil {
		return Kind{}, r.errAt(0, badf("read magic: %w", eofIsUnexpected(err)))
	}
	prefix := uint32(0)
	if m == MagicCommon || m == MagicService {
		prefix = m
		if m, err = r.u32(); err != nil {
			return Kind{}, r.errAt(4, badf("read magic: %w", eofIsUnexpected(err)))
		}
	}
	k, ok := KindByMagic(m)
	if !ok {
		return Kind{}, r.errAt(r.off-4, badf("unknown magic 0x%08x", m))
	}
	if k.Prefix != prefix {
		return Kind{}, r.errAt(0, badf("%s image with header magic 0x%08x, want 0x%08x", k.Name, prefix, k.Prefix))
	}
	return k, nil
}

func (r *Reader) expect(k Kind) error {
	var want [8]byte
	n := 0
	if k.Prefix != 0 {
		binary.LittleEndian.PutUint32(want[:], k.Prefix)
		n = 4
	}
	binary.LittleEndian.PutUint32(want[n:], k.Magic)
	n += 4
	var got [8]byte
	m, err := io.ReadFull(r.br, got[:n])
	r.off += int64(m)
	if err != nil {
		return r.errAt(0, badf("read magic of %s image: %w", k.Name, eofIsUnexpected(err)))
	}
	if got == want {
		return nil
	}
	// Say what the file is instead.
	first := binary.LittleEndian.Uint32(got[:])
	isHeader := first == MagicCommon || first == MagicService
	switch {
	case k.Prefix == 0 && isHeader:
		return r.errAt(0, badf("want %s image without header magic, file has header magic 0x%08x", k.Name, first))
	case k.Prefix == 0:
		return r.errAt(0, badf("want %s image, file is %s", k.Name, describeMagic(first)))
	case first != k.Prefix && isHeader:
		return r.errAt(0, badf("want %s image after header magic 0x%08x, file has header magic 0x%08x", k.Name, k.Prefix, first))
	case first != k.Prefix:
		return r.errAt(0, badf("want %s image, file has no header magic and is %s", k.Name, describeMagic(first)))
	default:
		return r.errAt(4, badf("want %s image, file is %s", k.Name, describeMagic(binary.LittleEndian.Uint32(got[4:]))))
	}
}

func eofIsUnexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// readN reads exactly n bytes into buf's storage, growing it as data
// arrives: a length that lies about a short file costs no more memory
// than the file holds.
func (r *Reader) readN(buf []byte, n int) ([]byte, error) {
	buf = buf[:0]
	for len(buf) < n {
		chunk := min(n-len(buf), max(len(buf), 64<<10))
		if cap(buf)-len(buf) < chunk {
			nb := make([]byte, len(buf), len(buf)+chunk)
			copy(nb, buf)
			buf = nb
		}
		m, err := io.ReadFull(r.br, buf[len(buf):len(buf)+chunk])
		buf = buf[:len(buf)+m]
		r.off += int64(m)
		if err != nil {
			return buf, eofIsUnexpected(err)
		}
	}
	return buf, nil
}

func (r *Reader) readErr(what string, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = badf("truncated %s: %w", what, err)
	} else {
		err = fmt.Errorf("read %s: %w", what, err)
	}
	return r.errAt(r.start, err)
}

// Read reads the next entry into m (which it resets first). At the end of
// the file it returns io.EOF itself; a file that ends inside an entry
// gives an *Error wrapping io.ErrUnexpectedEOF and ErrBadImage.
func (r *Reader) Read(m proto.Message) error {
	r.start = r.off
	var lb [4]byte
	n, err := io.ReadFull(r.br, lb[:])
	r.off += int64(n)
	if errors.Is(err, io.EOF) {
		return io.EOF
	}
	if err != nil {
		return r.readErr("entry length", err)
	}
	size := binary.LittleEndian.Uint32(lb[:])
	if size > MaxEntrySize {
		return r.errAt(r.start, badf("entry length %d exceeds %d", size, MaxEntrySize))
	}
	r.buf, err = r.readN(r.buf, int(size))
	if err != nil {
		return r.readErr("entry", err)
	}
	if err := proto.Unmarshal(r.buf, m); err != nil {
		return r.errAt(r.start, badf("decode %s: %w", m.ProtoReflect().Descriptor().Name(), err))
	}
	// Don't pin a large buffer for the reader's lifetime.
	if cap(r.buf) > 1<<20 {
		r.buf = nil
	}
	return nil
}

// ReadRaw reads n raw bytes (the data after a PIPES_DATA entry, say) into
// a new slice. n above MaxEntrySize is refused as malformed.
func (r *Reader) ReadRaw(n int) ([]byte, error) {
	r.start = r.off
	if n < 0 || n > MaxEntrySize {
		return nil, r.errAt(r.start, badf("raw data length %d outside [0, %d]", n, MaxEntrySize))
	}
	b, err := r.readN(nil, n)
	if err != nil {
		return nil, r.readErr("raw data", err)
	}
	return b, nil
}

// ReadAll reads every remaining entry, each as a new M.
func ReadAll[M any, PM interface {
	*M
	proto.Message
}](r *Reader) ([]PM, error) {
	var out []PM
	for {
		m := PM(new(M))
		err := r.Read(m)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
}
