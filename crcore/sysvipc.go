//go:build linux && amd64

package crcore

// SysV IPC of the dumped tree's IPC namespace: shared memory segments,
// semaphore sets and message queues.
//
// Dump: every object of the namespace (/proc/sysvipc/{shm,sem,msg}, read
// from a thread of ours that joined the namespace when it is not ours):
// ids, keys, owners, modes; segment contents read through a read-only
// shmat of our own; semaphore values with semctl(GETALL); queued messages
// with msgrcv(MSG_COPY|IPC_NOWAIT), which copies without consuming
// (CONFIG_CHECKPOINT_RESTORE). Attachments are VMAs (shmem.go): status
// VMA_AREA_SYSVIPC, shmid = the segment id.
//
// Images: CRIU's ipcns-shm-1.img (ipc_shm_entry, in_pagemaps: contents
// in pagemap-shmem-<id>.img) and ipcns-sem-1.img (ipc_sem_entry, then the
// values as CRIU lays them out); crhook's own crhook-ipc.img for whether
// the namespace was the tree's own and for the message queues (one
// entry per queue, messages inside: CRIU's ipcns-msg interleaves entries
// and raw data per message).
//
// Restore, before the tree is created: a tree that had its own namespace
// gets a new one (unshare(CLONE_NEWIPC) injected into the root, unless
// the root already is in another namespace than ours: a container's).
// Each object is created with its id (/proc/sys/kernel/{shm,sem,msg}_next_id
// written from a thread in the namespace), then given its owner, mode
// and contents. An object that still exists with that id and key (a tree
// dumped and restored in the namespace it never left: SysV objects
// outlive their processes) is taken over and its contents set from the
// image; one with another key is an error. Attachments are injected
// shmat calls at the VMA's address; an attachment of part of a segment
// (the rest unmapped before the dump) is the whole segment attached
// elsewhere, the part moved into place with mremap, the rest unmapped.
//
// A segment marked for removal (IPC_RMID while attached) is marked again
// once the tasks have attached it. Left out: the kernel's time stamps and
// last pids (not settable), and the namespace's sysctls (shmmax,
// msgmnb...).

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore/internal/image"
	"github.com/crhook/crhook/crcore/internal/procfs"
	pb "github.com/crhook/crhook/proto"
)

const (
	ipcShmImg = "ipcns-shm-1.img"
	ipcSemImg = "ipcns-sem-1.img"
	ipcExtImg = "crhook-ipc.img"
	// SHM_EXEC from include/uapi/linux/shm.h (x/sys lacks it).
	shmExec = 0o100000
	// sizes of struct msqid64_ds / semid64_ds on x86_64, rounded up.
	ipcDsSize = 128
	msgQbytes = 88 // offset of msg_qbytes in msqid64_ds
)

// sysvDump collects the SysV IPC state of the tree's IPC namespace.
type sysvDump struct {
	attached map[uint64]bool // shm ids some VMA of the tree attaches
}

// noteSysvAttach records that a task of the tree attaches segment id.
func (d *dumper) noteSysvAttach(id uint64) error {
	if d.ipc.attached == nil {
		d.ipc.attached = map[uint64]bool{}
	}
	d.ipc.attached[id] = true
	return nil
}

// sameIPCNS reports whether pid is in our IPC namespace.
func sameIPCNS(pid int) (bool, error) {
	var a, b unix.Stat_t
	if err := unix.Stat(procfs.Path(pid, "ns/ipc"), &a); err != nil {
		return false, &os.PathError{Op: "stat", Path: procfs.Path(pid, "ns/ipc"), Err: err}
	}
	if err := unix.Stat("/proc/thread-self/ns/ipc", &b); err != nil {
		return false, &os.PathError{Op: "stat", Path: "/proc/thread-self/ns/ipc", Err: err}
	}
	return a.Ino == b.Ino && a.Dev == b.Dev, nil
}

// inIPCNS runs f in pid's IPC namespace: here if it is ours, else on a
// thread of its own that joins it and is never given back.
func inIPCNS(pid int, f func() error) error {
	same, err := sameIPCNS(pid)
	if err != nil {
		return err
	}
	if same {
		return f()
	}
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with us
		fd, err := unix.Open(procfs.Path(pid, "ns/ipc"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- &os.PathError{Op: "open", Path: procfs.Path(pid, "ns/ipc"), Err: err}
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWIPC)
		_ = unix.Close(fd)
		if err != nil {
			ch <- os.NewSyscallError("setns(CLONE_NEWIPC)", err)
			return
		}
		ch <- f()
	}()
	return <-ch
}

// sysvRows parses /proc/sysvipc/NAME: one map of column -> value per
// object.
func sysvRows(name string) ([]map[string]string, error) {
	b, err := os.ReadFile("/proc/sysvipc/" + name)
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	var cols []string
	var out []map[string]string
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if cols == nil {
			cols = f
			continue
		}
		if len(f) < len(cols) {
			continue
		}
		m := map[string]string{}
		for i, c := range cols {
			m[c] = f[i]
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

func rowDesc(m map[string]string, idCol string) (*pb.IpcDescEntry, error) {
	num := func(k string, base int) (uint64, error) {
		v, err := strconv.ParseInt(m[k], base, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/sysvipc column %s: %w", k, err)
		}
		return uint64(v), nil
	}
	var vals [7]uint64
	for i, k := range []string{"key", "uid", "gid", "cuid", "cgid", "perms", idCol} {
		base := 10
		if k == "perms" {
			base = 8
		}
		v, err := num(k, base)
		if err != nil {
			return nil, err
		}
		vals[i] = v
	}
	return &pb.IpcDescEntry{
		Key: proto.Uint32(uint32(vals[0])), Uid: proto.Uint32(uint32(vals[1])), Gid: proto.Uint32(uint32(vals[2])),
		Cuid: proto.Uint32(uint32(vals[3])), Cgid: proto.Uint32(uint32(vals[4])), Mode: proto.Uint32(uint32(vals[5])),
		Id: proto.Uint32(uint32(vals[6])),
	}, nil
}

// dumpSysv dumps the SysV objects of root's IPC namespace.
func (d *dumper) dumpSysv(root int) error {
	same, err := sameIPCNS(root)
	if err != nil {
		return err
	}
	ext := &pb.CrhookIpcEntry{OwnNamespace: proto.Bool(!same)}
	var shms []*pb.IpcShmEntry
	var sems []*pb.IpcSemEntry
	var semVals [][]uint16
	shmData := map[uint32][]byte{}
	err = inIPCNS(root, func() error {
		if !same {
			sc, err := readIPCSysctls()
			if err != nil {
				return err
			}
			ext.Sysctls = sc
		}
		rows, err := sysvRows("shm")
		if err != nil {
			return err
		}
		for _, m := range rows {
			desc, err := rowDesc(m, "shmid")
			if err != nil {
				return err
			}
			size, err := strconv.ParseUint(m["size"], 10, 64)
			if err != nil {
				return fmt.Errorf("/proc/sysvipc/shm size: %w", err)
			}
			b, err := unix.SysvShmAttach(int(desc.GetId()), 0, unix.SHM_RDONLY)
			if err != nil {
				return fmt.Errorf("read SysV segment %d: %w", desc.GetId(), os.NewSyscallError("shmat", err))
			}
			shmData[desc.GetId()] = bytes.Clone(b)
			_ = unix.SysvShmDetach(b)
			shms = append(shms, &pb.IpcShmEntry{Desc: desc, Size: proto.Uint64(size), InPagemaps: proto.Bool(true)})
		}
		if rows, err = sysvRows("sem"); err != nil {
			return err
		}
		for _, m := range rows {
			desc, err := rowDesc(m, "semid")
			if err != nil {
				return err
			}
			n, err := strconv.ParseUint(m["nsems"], 10, 32)
			if err != nil {
				return fmt.Errorf("/proc/sysvipc/sem nsems: %w", err)
			}
			vals := make([]uint16, n)
			if err := semctlBuf(int(desc.GetId()), semGetall, vals); err != nil {
				return fmt.Errorf("semaphore set %d: %w", desc.GetId(), err)
			}
			sems = append(sems, &pb.IpcSemEntry{Desc: desc, Nsems: proto.Uint32(uint32(n))})
			semVals = append(semVals, vals)
		}
		if rows, err = sysvRows("msg"); err != nil {
			return err
		}
		for _, m := range rows {
			desc, err := rowDesc(m, "msqid")
			if err != nil {
				return err
			}
			q, err := dumpMsgQueue(int(desc.GetId()), m)
			if err != nil {
				return fmt.Errorf("message queue %d: %w", desc.GetId(), err)
			}
			q.Desc = desc
			ext.Queues = append(ext.Queues, q)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("dump SysV IPC: %w", err)
	}
	if len(shms) > 0 {
		w, err := d.dir.NewWriter(ipcShmImg, image.IpcnsShm)
		if err != nil {
			return err
		}
		for _, e := range shms {
			if err := w.Write(e); err != nil {
				_ = w.Close()
				return err
			}
		}
		if err := w.Close(); err != nil {
			return err
		}
		for _, e := range shms {
			if d.shm.anon[uint64(e.GetDesc().GetId())] {
				return fmt.Errorf("SysV segment %d and a shared anonymous object both need %s: %w", e.GetDesc().GetId(), shmemPagemapName(uint64(e.GetDesc().GetId())), ErrNotSupported)
			}
			if err := d.writeShmemData(uint64(e.GetDesc().GetId()), shmData[e.GetDesc().GetId()]); err != nil {
				return err
			}
		}
	}
	if len(sems) > 0 {
		w, err := d.dir.NewWriter(ipcSemImg, image.IpcnsSem)
		if err != nil {
			return err
		}
		for i, e := range sems {
			if err := w.Write(e); err != nil {
				_ = w.Close()
				return err
			}
			raw := make([]byte, (len(semVals[i])*2+7)&^7)
			for k, v := range semVals[i] {
				binary.LittleEndian.PutUint16(raw[2*k:], v)
			}
			if err := w.WriteRaw(raw); err != nil {
				_ = w.Close()
				return err
			}
		}
		if err := w.Close(); err != nil {
			return err
		}
	}
	if !ext.GetOwnNamespace() && len(shms) == 0 && len(sems) == 0 && len(ext.GetQueues()) == 0 {
		return nil // nothing to restore: no image
	}
	return d.writeOne(ipcExtImg, image.CrhookIpc, ext)
}

// dumpMsgQueue copies the messages of queue id without taking them.
func dumpMsgQueue(id int, row map[string]string) (*pb.CrhookIpcMsgEntry, error) {
	ds := make([]byte, ipcDsSize)
	if err := ipcCtl(unix.SYS_MSGCTL, id, ipcStat, ds); err != nil {
		return nil, err
	}
	q := &pb.CrhookIpcMsgEntry{Qbytes: proto.Uint64(binary.LittleEndian.Uint64(ds[msgQbytes:]))}
	n, err := strconv.Atoi(row["qnum"])
	if err != nil {
		return nil, fmt.Errorf("/proc/sysvipc/msg qnum: %w", err)
	}
	buf := make([]byte, 8+int(min(q.GetQbytes(), 1<<20)))
	for i := 0; i < n; i++ {
		got, err := msgrcvBuf(id, buf, int64(i), unix.IPC_NOWAIT|msgCopy)
		if err != nil {
			if errors.Is(err, unix.ENOSYS) {
				return nil, fmt.Errorf("%w (MSG_COPY needs CONFIG_CHECKPOINT_RESTORE): %w", err, ErrNotSupported)
			}
			return nil, err
		}
		q.Msgs = append(q.Msgs, &pb.CrhookIpcMsg{Mtype: proto.Uint64(binary.LittleEndian.Uint64(buf)), Data: bytes.Clone(buf[8 : 8+got])})
	}
	return q, nil
}

// writeShmemData writes data as pagemap-shmem-<id>.img and its pages,
// zero pages left out.
func (d *dumper) writeShmemData(id uint64, data []byte) error {
	d.shm.pages++
	pagesID := uint32(shmemPagesBase) + d.shm.pages
	pages, err := d.dir.CreatePages(pagesName(int(pagesID)))
	if err != nil {
		return err
	}
	defer pages.Close()
	w, err := d.dir.NewWriter(shmemPagemapName(id), image.Pagemap)
	if err != nil {
		return err
	}
	if err := w.Write(&pb.PagemapHead{PagesId: proto.Uint32(pagesID)}); err != nil {
		_ = w.Close()
		return err
	}
	ps := pageSize
	zero := make([]byte, ps)
	for off := 0; off < len(data); {
		if bytes.Equal(pad(data[off:min(off+ps, len(data))], ps), zero) {
			off += ps
			continue
		}
		end := off
		for end < len(data) && !bytes.Equal(pad(data[end:min(end+ps, len(data))], ps), zero) {
			end += ps
		}
		if err := w.Write(&pb.PagemapEntry{Vaddr: proto.Uint64(uint64(off)), NrPages: proto.Uint32(uint32((end - off) / ps)), Flags: proto.Uint32(pePresent)}); err != nil {
			_ = w.Close()
			return err
		}
		if _, err := pages.Write(pad(data[off:min(end, len(data))], end-off)); err != nil {
			_ = w.Close()
			return err
		}
		d.stats.PagesWritten += uint64((end - off) / ps)
		off = end
	}
	return w.Close()
}

// pad returns b extended with zeros to n bytes.
func pad(b []byte, n int) []byte {
	if len(b) >= n {
		return b
	}
	return append(bytes.Clone(b), make([]byte, n-len(b))...)
}

// restoreSysv recreates the image's SysV objects in the namespace the
// tree will live in. root is the restored root, before any child exists.
func (rs *restorer) restoreSysv(root *rtask) error {
	ext := &pb.CrhookIpcEntry{}
	if err := readOne(rs.s.dir, ipcExtImg, image.CrhookIpc, ext); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil // an image without SysV IPC state
		}
		return err
	}
	shms, err := readAll(rs.s.dir, ipcShmImg, image.IpcnsShm, func() *pb.IpcShmEntry { return &pb.IpcShmEntry{} })
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	sems, vals, err := readSems(rs.s.dir)
	if err != nil {
		return err
	}
	if len(shms) == 0 && len(sems) == 0 && len(ext.GetQueues()) == 0 && !ext.GetOwnNamespace() {
		return nil
	}
	// created: the namespace is the restore's own, so its limits are
	// the image's to set (a container's are its runtime's).
	created := false
	if ext.GetOwnNamespace() {
		same, err := sameIPCNS(root.hostPid)
		if err != nil {
			return err
		}
		if same {
			if _, err := root.r.call("unshare(CLONE_NEWIPC)", unix.SYS_UNSHARE, unix.CLONE_NEWIPC); err != nil {
				return err
			}
			created = true
		}
	}
	err = inIPCNS(root.hostPid, func() error {
		if created {
			if err := writeIPCSysctls(ext.GetSysctls()); err != nil {
				return err
			}
		}
		for _, e := range shms {
			if err := rs.restoreShm(e); err != nil {
				return fmt.Errorf("SysV segment %d: %w", e.GetDesc().GetId(), err)
			}
			if rs.shmSize == nil {
				rs.shmSize = map[uint64]uint64{}
			}
			rs.shmSize[uint64(e.GetDesc().GetId())] = e.GetSize()
			if e.GetDesc().GetMode()&shmDest != 0 {
				rs.shmMarked = append(rs.shmMarked, int(e.GetDesc().GetId()))
			}
		}
		for i, e := range sems {
			if err := restoreSem(e, vals[i]); err != nil {
				return fmt.Errorf("semaphore set %d: %w", e.GetDesc().GetId(), err)
			}
		}
		for _, q := range ext.GetQueues() {
			if err := restoreQueue(q); err != nil {
				return fmt.Errorf("message queue %d: %w", q.GetDesc().GetId(), err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("restore SysV IPC: %w", err)
	}
	return nil
}

// ipcSysctls are the limits of an IPC namespace, in /proc/sys/kernel.
var ipcSysctls = []string{"shmmax", "shmall", "shmmni", "shm_rmid_forced", "msgmax", "msgmnb", "msgmni", "sem"}

// readIPCSysctls reads the limits of the calling thread's IPC namespace.
func readIPCSysctls() ([]*pb.CrhookIpcSysctl, error) {
	var out []*pb.CrhookIpcSysctl
	for _, n := range ipcSysctls {
		b, err := os.ReadFile("/proc/sys/kernel/" + n)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, &pb.CrhookIpcSysctl{Name: proto.String(n), Value: proto.String(strings.TrimSpace(string(b)))})
	}
	return out, nil
}

// writeIPCSysctls sets the limits of the calling thread's IPC namespace;
// only the names crhook dumps are accepted from an image.
func writeIPCSysctls(sc []*pb.CrhookIpcSysctl) error {
	for _, e := range sc {
		name, val := e.GetName(), e.GetValue()
		known := false
		for _, n := range ipcSysctls {
			known = known || n == name
		}
		if !known || strings.ContainsAny(val, "\n\x00") || len(val) > 64 {
			return badImagef("%s: sysctl %q = %q is not an IPC namespace limit crhook restores", ipcExtImg, name, val)
		}
		if err := os.WriteFile("/proc/sys/kernel/"+name, []byte(val), 0); err != nil {
			return fmt.Errorf("set IPC namespace limit %s to %s: %w", name, val, err)
		}
	}
	return nil
}

// shmDest is SHM_DEST in a segment's mode: marked for removal (IPC_RMID)
// while attached, destroyed at its last detach.
const shmDest = 0o1000

// markSysvRemoved marks again the segments that were marked for removal,
// once the restored tasks have attached them (root: a task of the tree's
// IPC namespace).
func (rs *restorer) markSysvRemoved(root *rtask) error {
	if len(rs.shmMarked) == 0 {
		return nil
	}
	return inIPCNS(root.hostPid, func() error {
		for _, id := range rs.shmMarked {
			if _, err := unix.SysvShmCtl(id, unix.IPC_RMID, nil); err != nil {
				return fmt.Errorf("mark SysV segment %d for removal: %w", id, os.NewSyscallError("shmctl(IPC_RMID)", err))
			}
		}
		return nil
	})
}

func readSems(d *image.Dir) ([]*pb.IpcSemEntry, [][]uint16, error) {
	rd, err := d.NewReader(ipcSemImg, image.IpcnsSem)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	defer rd.Close()
	var sems []*pb.IpcSemEntry
	var vals [][]uint16
	for {
		e := &pb.IpcSemEntry{}
		err := rd.Read(e)
		if errors.Is(err, io.EOF) {
			return sems, vals, nil
		}
		if err != nil {
			return nil, nil, err
		}
		if e.GetNsems() > 32000 {
			return nil, nil, badImagef("%s: %d semaphores in a set", ipcSemImg, e.GetNsems())
		}
		raw, err := rd.ReadRaw(int(e.GetNsems()*2+7) &^ 7)
		if err != nil {
			return nil, nil, err
		}
		v := make([]uint16, e.GetNsems())
		for i := range v {
			v[i] = binary.LittleEndian.Uint16(raw[2*i:])
		}
		sems = append(sems, e)
		vals = append(vals, v)
	}
}

// makeWithID creates an object with the image's id through the
// namespace's <kind>_next_id, unless one with that id exists: then it
// must have the image's key, and is taken over. get makes the object.
// Precondition: on a thread in the namespace.
func makeWithID(kind string, desc *pb.IpcDescEntry, exists func() (key uint32, ok bool), get func() (int, error)) error {
	id := int(desc.GetId())
	if key, ok := exists(); ok {
		if key != desc.GetKey() {
			return fmt.Errorf("id %d is taken by an object of key %#x, the image's has key %#x: %w", id, key, desc.GetKey(), ErrNotSupported)
		}
		return nil
	}
	next := "/proc/sys/kernel/" + kind + "_next_id"
	if err := os.WriteFile(next, []byte(strconv.Itoa(id)), 0); err != nil {
		return err
	}
	got, err := get()
	if err != nil {
		_ = os.WriteFile(next, []byte("-1"), 0) // best effort: get's error is the one to report
		return err
	}
	if got != id {
		return fmt.Errorf("created with id %d, not %d", got, id)
	}
	return nil
}

// perm64 fills the ipc64_perm at the start of a *id64_ds buffer.
func perm64(buf []byte, desc *pb.IpcDescEntry) {
	binary.LittleEndian.PutUint32(buf[0:], desc.GetKey())
	binary.LittleEndian.PutUint32(buf[4:], desc.GetUid())
	binary.LittleEndian.PutUint32(buf[8:], desc.GetGid())
	binary.LittleEndian.PutUint16(buf[20:], uint16(desc.GetMode()))
}

func ipcKeyOf(buf []byte) uint32 { return binary.LittleEndian.Uint32(buf[0:]) }

func (rs *restorer) restoreShm(e *pb.IpcShmEntry) error {
	desc := e.GetDesc()
	id := int(desc.GetId())
	err := makeWithID("shm", desc, func() (uint32, bool) {
		var ds unix.SysvShmDesc
		if _, err := unix.SysvShmCtl(id, unix.IPC_STAT, &ds); err != nil {
			return 0, false
		}
		return uint32(ds.Perm.Key), true
	}, func() (int, error) {
		n, err := unix.SysvShmGet(int(int32(desc.GetKey())), int(e.GetSize()), int(desc.GetMode()&0o777)|unix.IPC_CREAT|unix.IPC_EXCL)
		return n, os.NewSyscallError("shmget", err)
	})
	if err != nil {
		return err
	}
	ds := unix.SysvShmDesc{}
	ds.Perm.Uid, ds.Perm.Gid, ds.Perm.Mode = desc.GetUid(), desc.GetGid(), desc.GetMode()&0o777
	if _, err := unix.SysvShmCtl(id, unix.IPC_SET, &ds); err != nil {
		return os.NewSyscallError("shmctl(IPC_SET)", err)
	}
	b, err := unix.SysvShmAttach(id, 0, 0)
	if err != nil {
		return os.NewSyscallError("shmat", err)
	}
	defer func() { _ = unix.SysvShmDetach(b) }() // our own attach: fails only for a bad address
	clear(b)
	pm, err := readShmemPagemap(rs.s.dir, uint64(id))
	if err != nil {
		return err
	}
	for _, r := range pm.runs {
		if r.GetVaddr()+uint64(r.GetNrPages())*uint64(pageSize) > (uint64(len(b))+uint64(pageSize)-1)/uint64(pageSize)*uint64(pageSize) {
			return badImagef("%s: run at %#x past the segment's %d bytes", pm.name, r.GetVaddr(), len(b))
		}
	}
	return pm.copyToBytes(rs.s.dir, b)
}

// copyToBytes is copyTo for a mapping of ours (a segment attached here);
// bytes past its end are dropped.
func (pm *shmemPagemap) copyToBytes(d *image.Dir, dst []byte) error {
	if len(pm.runs) == 0 {
		return nil
	}
	src, err := d.OpenPages(pagesName(int(pm.pagesID)))
	if err != nil {
		return err
	}
	defer src.Close()
	buf := make([]byte, pageSize)
	for _, e := range pm.runs {
		off := int(e.GetVaddr())
		for i := uint32(0); i < e.GetNrPages(); i++ {
			if _, err := io.ReadFull(src, buf); err != nil {
				return fmt.Errorf("%s: %w", pagesName(int(pm.pagesID)), err)
			}
			if off < len(dst) {
				copy(dst[off:], buf)
			}
			off += pageSize
		}
	}
	return nil
}

func restoreSem(e *pb.IpcSemEntry, vals []uint16) error {
	desc := e.GetDesc()
	id := int(desc.GetId())
	err := makeWithID("sem", desc, func() (uint32, bool) {
		ds := make([]byte, ipcDsSize)
		if ipcCtl(unix.SYS_SEMCTL, id, ipcStat, ds) != nil {
			return 0, false
		}
		return ipcKeyOf(ds), true
	}, func() (int, error) {
		n, _, e2 := unix.Syscall(unix.SYS_SEMGET, uintptr(int32(desc.GetKey())), uintptr(e.GetNsems()), uintptr(desc.GetMode()&0o777|unix.IPC_CREAT|unix.IPC_EXCL))
		if e2 != 0 {
			return 0, os.NewSyscallError("semget", e2)
		}
		return int(n), nil
	})
	if err != nil {
		return err
	}
	if err := semctlBuf(id, semSetall, vals); err != nil {
		return err
	}
	ds := make([]byte, ipcDsSize)
	perm64(ds, desc)
	return ipcCtl(unix.SYS_SEMCTL, id, ipcSet, ds)
}

func restoreQueue(q *pb.CrhookIpcMsgEntry) error {
	desc := q.GetDesc()
	id := int(desc.GetId())
	err := makeWithID("msg", desc, func() (uint32, bool) {
		ds := make([]byte, ipcDsSize)
		if ipcCtl(unix.SYS_MSGCTL, id, ipcStat, ds) != nil {
			return 0, false
		}
		return ipcKeyOf(ds), true
	}, func() (int, error) {
		n, _, e2 := unix.Syscall(unix.SYS_MSGGET, uintptr(int32(desc.GetKey())), uintptr(desc.GetMode()&0o777|unix.IPC_CREAT|unix.IPC_EXCL), 0)
		if e2 != 0 {
			return 0, os.NewSyscallError("msgget", e2)
		}
		return int(n), nil
	})
	if err != nil {
		return err
	}
	ds := make([]byte, ipcDsSize)
	perm64(ds, desc)
	binary.LittleEndian.PutUint64(ds[msgQbytes:], q.GetQbytes())
	if err := ipcCtl(unix.SYS_MSGCTL, id, ipcSet, ds); err != nil {
		return err
	}
	// A queue taken over is emptied first: the image's messages replace
	// whatever it holds now.
	buf := make([]byte, 8+(1<<20))
	for {
		if _, err := msgrcvBuf(id, buf, 0, unix.IPC_NOWAIT|msgNoerror); err != nil {
			break
		}
	}
	for _, m := range q.GetMsgs() {
		b := make([]byte, 8+len(m.GetData()))
		binary.LittleEndian.PutUint64(b, m.GetMtype())
		copy(b[8:], m.GetData())
		if err := msgsndBuf(id, b); err != nil {
			return err
		}
	}
	return nil
}

// attachSysv attaches SysV segment shmid at the VMA's address with an
// injected shmat, read-only or executable as the VMA was.
func (rs *restorer) attachSysv(t *rtask, v *pb.VmaEntry) error {
	var fl uint64
	prot := v.GetProt()
	if prot&unix.PROT_WRITE == 0 {
		fl |= unix.SHM_RDONLY
	}
	if prot&unix.PROT_EXEC != 0 {
		fl |= shmExec
	}
	size, known := rs.shmSize[v.GetShmid()]
	whole := (size + uint64(pageSize) - 1) / uint64(pageSize) * uint64(pageSize)
	length := v.GetEnd() - v.GetStart()
	if known && (v.GetPgoff() != 0 || length != whole) {
		return rs.attachSysvPart(t, v, fl, whole)
	}
	if v.GetPgoff() != 0 {
		return fmt.Errorf("vma %s: a SysV segment attached from offset %#x, of unknown size: %w", vmaName(v), v.GetPgoff(), ErrNotSupported)
	}
	got, err := t.r.call(fmt.Sprintf("shmat %d at %s", v.GetShmid(), vmaName(v)), unix.SYS_SHMAT, v.GetShmid(), v.GetStart(), fl)
	if err != nil {
		return err
	}
	if got != v.GetStart() {
		return fmt.Errorf("shmat %d: attached at %#x, not %#x", v.GetShmid(), got, v.GetStart())
	}
	// A segment partly unmapped before the dump would now be whole:
	// the attachment must end where the VMA did.
	var st unix.Stat_t
	mf := procfs.Path(t.hostPid, fmt.Sprintf("map_files/%x-%x", v.GetStart(), v.GetEnd()))
	if unix.Stat(mf, &st) != nil {
		return fmt.Errorf("shmat %d at %s: the segment is larger than the attachment was: %w", v.GetShmid(), vmaName(v), ErrNotSupported)
	}
	return nil
}

// attachSysvPart rebuilds an attachment of part of a segment (the rest
// unmapped before the dump): the whole segment is attached wherever the
// kernel likes, the part moved into place with mremap, and the rest
// unmapped.
func (rs *restorer) attachSysvPart(t *rtask, v *pb.VmaEntry, fl, whole uint64) error {
	r := t.r
	off, length := v.GetPgoff(), v.GetEnd()-v.GetStart()
	if off >= whole || length > whole-off {
		return badImagef("vma %s: pages %#x+%#x outside SysV segment %d of %d bytes", vmaName(v), off, length, v.GetShmid(), whole)
	}
	tmp, err := r.call(fmt.Sprintf("shmat %d", v.GetShmid()), unix.SYS_SHMAT, v.GetShmid(), 0, fl)
	if err != nil {
		return err
	}
	if _, err := r.call(fmt.Sprintf("mremap part of SysV segment %d to %s", v.GetShmid(), vmaName(v)), unix.SYS_MREMAP,
		tmp+off, length, length, unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED, v.GetStart()); err != nil {
		r.callBestEffort("munmap", unix.SYS_MUNMAP, tmp, whole)
		return err
	}
	b := r.batch()
	if off > 0 {
		b.add("munmap head of SysV attachment", unix.SYS_MUNMAP, tmp, off)
	}
	if rest := whole - off - length; rest > 0 {
		b.add("munmap tail of SysV attachment", unix.SYS_MUNMAP, tmp+off+length, rest)
	}
	_, err = b.run()
	return err
}
