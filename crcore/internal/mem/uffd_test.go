//go:build linux

package mem

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/internal/kabi"
)

// TestUserfaultPut installs pages in our own memory through a
// userfaultfd: missing pages are copied in, a page that is present after
// all (EEXIST) is overwritten with process_vm_writev, and a run outside
// every registered range fails naming its address.
func TestUserfaultPut(t *testing.T) {
	fd, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|kabi.UFFD_USER_MODE_ONLY, 0, 0)
	if errno != 0 {
		t.Fatalf("userfaultfd: %v", errno)
	}
	uf, err := NewUserfault(os.NewFile(fd, "userfaultfd"))
	if err != nil {
		t.Fatal(err)
	}
	ps := int(pageSize)
	const pages = 16
	dst, err := unix.Mmap(-1, 0, pages*ps, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(dst)
	dst[3*ps] = 1 // page 3 is present
	addr := uint64(addrOf(dst))
	if err := uf.Register(addr, pages*uint64(ps)); err != nil {
		t.Fatal(err)
	}
	src := make([]byte, pages*ps)
	for i := range src {
		src[i] = byte(i*7 + i/ps)
	}
	local := []unix.Iovec{{Base: &src[0]}, {Base: &src[8*ps]}}
	local[0].SetLen(8 * ps)
	local[1].SetLen(8 * ps)
	rem := []unix.RemoteIovec{{Base: uintptr(addr), Len: 8 * ps}, {Base: uintptr(addr) + uintptr(8*ps), Len: 8 * ps}}
	if err := put(os.Getpid(), uf, local, rem, []bool{true, true}); err != nil {
		t.Fatal(err)
	}
	if err := uf.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst, src) {
		t.Fatal("memory differs from what was put")
	}
	if got, want := uf.Installed(), uint64((pages-1)*ps); got != want {
		t.Errorf("installed %d bytes through the userfaultfd, want %d (all but the present page)", got, want)
	}

	// Nothing registered any more: a copy has nowhere to go.
	fd, _, errno = unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|kabi.UFFD_USER_MODE_ONLY, 0, 0)
	if errno != 0 {
		t.Fatalf("userfaultfd: %v", errno)
	}
	uf2, err := NewUserfault(os.NewFile(fd, "userfaultfd"))
	if err != nil {
		t.Fatal(err)
	}
	defer uf2.Close()
	fresh, err := unix.Mmap(-1, 0, ps, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(fresh)
	one := []unix.Iovec{{Base: &src[0]}}
	one[0].SetLen(ps)
	err = put(os.Getpid(), uf2, one, []unix.RemoteIovec{{Base: uintptr(addrOf(fresh)), Len: ps}}, []bool{true})
	if err == nil || !strings.Contains(err.Error(), "UFFDIO_COPY") {
		t.Fatalf("copy into an unregistered page: %v, want an UFFDIO_COPY error", err)
	}
}

// addrOf is the address of b's first byte, for the kernel.
func addrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }
