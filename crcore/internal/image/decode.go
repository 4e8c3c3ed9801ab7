package image

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	pb "github.com/crhook/crhook/proto"
)

// Decode reads a whole image file of any kind crhook knows, found by its
// magic, for display (crhook show). msgs holds the entries in file order;
// a pagemap image's pagemap_head comes first. Raw data (after a
// PIPES_DATA, FIFO_DATA or SK_QUEUES entry or a ghost chunk, or a ghost
// file's contents) appears as a *wrapperspb.BytesValue right after the
// entry it belongs to. Pages files have no header and are not images.
func Decode(path string) (kind Kind, msgs []proto.Message, err error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return Kind{}, nil, fmt.Errorf("open image: %w", err)
	}
	r := newReader(f, path, f)
	defer r.Close()
	return r.decodeAll()
}

func (r *Reader) decodeAll() (Kind, []proto.Message, error) {
	k, err := r.header()
	if err != nil {
		return Kind{}, nil, err
	}
	ki := kindsByMagic[k.Magic]
	var msgs []proto.Message

	switch ki.framing {
	case framePagemap:
		head := &pb.PagemapHead{}
		if err := r.Read(head); err != nil {
			if errors.Is(err, io.EOF) {
				err = r.errAt(r.off, badf("no pagemap_head"))
			}
			return k, nil, err
		}
		msgs = append(msgs, head)
	case frameGhost:
		msgs, err := r.decodeGhost()
		return k, msgs, err
	case framePlain:
	}

	for {
		m := ki.newEntry()
		err := r.Read(m)
		if errors.Is(err, io.EOF) {
			return k, msgs, nil
		}
		if err != nil {
			return k, msgs, err
		}
		msgs = append(msgs, m)
		if ki.extra == nil {
			continue
		}
		raw, err := r.readRaw64(ki.extra(m))
		if err != nil {
			return k, msgs, err
		}
		msgs = append(msgs, wrapperspb.Bytes(raw))
	}
}

func (r *Reader) readRaw64(n uint64) ([]byte, error) {
	if n > MaxEntrySize {
		return nil, r.errAt(r.off, badf("raw data length %d exceeds %d", n, MaxEntrySize))
	}
	return r.ReadRaw(int(n))
}

// decodeGhost appends a ghost image's entries to msgs; see frameGhost.
func (r *Reader) decodeGhost() (msgs []proto.Message, err error) {
	gf := &pb.GhostFileEntry{}
	if err := r.Read(gf); err != nil {
		if errors.Is(err, io.EOF) {
			err = r.errAt(r.off, badf("no ghost_file_entry"))
		}
		return nil, err
	}
	msgs = append(msgs, gf)
	if !gf.GetChunks() {
		start := r.off
		b, err := io.ReadAll(io.LimitReader(r.br, MaxEntrySize+1))
		r.off += int64(len(b))
		if err != nil {
			return msgs, r.errAt(start, fmt.Errorf("read ghost contents: %w", err))
		}
		if len(b) > MaxEntrySize {
			return msgs, r.errAt(start, badf("ghost contents exceed %d bytes", MaxEntrySize))
		}
		return append(msgs, wrapperspb.Bytes(b)), nil
	}
	for {
		c := &pb.GhostChunkEntry{}
		err := r.Read(c)
		if errors.Is(err, io.EOF) {
			return msgs, nil
		}
		if err != nil {
			return msgs, err
		}
		msgs = append(msgs, c)
		raw, err := r.readRaw64(c.GetLen())
		if err != nil {
			return msgs, err
		}
		msgs = append(msgs, wrapperspb.Bytes(raw))
	}
}
