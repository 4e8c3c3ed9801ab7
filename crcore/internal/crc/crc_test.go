package crc

import (
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

func TestCombine(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	for _, cut := range []int{0, 1, 7, 4096, 65537, len(buf) - 1, len(buf)} {
		a, b := buf[:cut], buf[cut:]
		want := crc32.Checksum(buf, Table)
		got := Combine(Update(0, a), Update(0, b), uint64(len(b)))
		if got != want {
			t.Errorf("cut %d: combine %#x, want %#x", cut, got, want)
		}
	}
	// Several pieces folded left to right.
	var c uint32
	for off := 0; off < len(buf); off += 300007 {
		p := buf[off:min(off+300007, len(buf))]
		c = Combine(c, Update(0, p), uint64(len(p)))
	}
	if want := crc32.Checksum(buf, Table); c != want {
		t.Errorf("pieces: %#x, want %#x", c, want)
	}
}
