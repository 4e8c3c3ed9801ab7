//go:build linux

package main

import (
	"encoding/binary"
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v7/stats"
	"google.golang.org/protobuf/proto"
)

// readCRIUStats decodes CRIU's stats-dump or stats-restore: a service
// image (two magics) holding one u32-length-prefixed StatsEntry. go-criu's
// own reader slices without bounds checks, so the framing is checked here.
func readCRIUStats(path string) (*stats.StatsEntry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	const hdr = stats.PayloadOffset
	if len(b) < hdr {
		return nil, fmt.Errorf("%s: %d bytes, short header", path, len(b))
	}
	if m := binary.LittleEndian.Uint32(b[stats.PrimaryMagicOffset:]); m != stats.ImgServiceMagic {
		return nil, fmt.Errorf("%s: magic %#x, want %#x", path, m, stats.ImgServiceMagic)
	}
	if m := binary.LittleEndian.Uint32(b[stats.SecondaryMagicOffset:]); m != stats.StatsMagic {
		return nil, fmt.Errorf("%s: magic %#x, want %#x", path, m, stats.StatsMagic)
	}
	n := int64(binary.LittleEndian.Uint32(b[stats.SizeOffset:]))
	if n > int64(len(b)-hdr) {
		return nil, fmt.Errorf("%s: entry of %d bytes at offset %d past the end (%d)", path, n, hdr, len(b))
	}
	st := &stats.StatsEntry{}
	if err := proto.Unmarshal(b[hdr:hdr+int(n)], st); err != nil {
		return nil, fmt.Errorf("%s: offset %d: %w", path, hdr, err)
	}
	return st, nil
}
