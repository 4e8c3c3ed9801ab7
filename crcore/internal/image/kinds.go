package image

import (
	"google.golang.org/protobuf/proto"

	pb "github.com/crhook/crhook/proto"
)

// Header magics that precede an image's own magic (CRIU's magic.h).
const (
	MagicCommon  uint32 = 0x54564319 // IMG_COMMON_MAGIC, "Sarov"
	MagicService uint32 = 0x55105940 // IMG_SERVICE_MAGIC, "Zlatoust"
)

// Kind is an image type: its magic number and the header magic written
// before it (0 for none: only the inventory goes without one).
type Kind struct {
	Name   string
	Magic  uint32
	Prefix uint32
}

// CRIU's image kinds, with CRIU's magic numbers (criu/include/magic.h).
var (
	Inventory    = Kind{"INVENTORY", 0x58313116, 0}
	Pstree       = Kind{"PSTREE", 0x50273030, MagicCommon}
	Core         = Kind{"CORE", 0x55053847, MagicCommon}
	IDs          = Kind{"IDS", 0x54432030, MagicCommon}
	Creds        = Kind{"CREDS", 0x54023547, MagicCommon}
	MM           = Kind{"MM", 0x57492820, MagicCommon}
	VMAs         = Kind{"VMAS", 0x54123737, MagicCommon}
	Pagemap      = Kind{"PAGEMAP", 0x56084025, MagicCommon}
	Fdinfo       = Kind{"FDINFO", 0x56213732, MagicCommon}
	Files        = Kind{"FILES", 0x56303138, MagicCommon}
	RegFiles     = Kind{"REG_FILES", 0x50363636, MagicCommon}
	Fs           = Kind{"FS", 0x51403912, MagicCommon}
	Pipes        = Kind{"PIPES", 0x56513555, MagicCommon}
	PipesData    = Kind{"PIPES_DATA", 0x56453709, MagicCommon}
	Fifo         = Kind{"FIFO", 0x58364939, MagicCommon}
	FifoData     = Kind{"FIFO_DATA", 0x59333054, MagicCommon}
	UnixSk       = Kind{"UNIXSK", 0x54373943, MagicCommon}
	InetSk       = Kind{"INETSK", 0x56443851, MagicCommon}
	SkQueues     = Kind{"SK_QUEUES", 0x56264026, MagicCommon}
	Eventfd      = Kind{"EVENTFD_FILE", 0x44523722, MagicCommon}
	Eventpoll    = Kind{"EVENTPOLL_FILE", 0x45023858, MagicCommon}
	EventpollTfd = Kind{"EVENTPOLL_TFD", 0x44433746, MagicCommon}
	Signalfd     = Kind{"SIGNALFD", 0x57323820, MagicCommon}
	Timerfd      = Kind{"TIMERFD", 0x50493712, MagicCommon}
	InotifyFile  = Kind{"INOTIFY_FILE", 0x48424431, MagicCommon}
	InotifyWd    = Kind{"INOTIFY_WD", 0x54562009, MagicCommon}
	MemfdInode   = Kind{"MEMFD_INODE", 0x48453499, MagicCommon}
	TtyFiles     = Kind{"TTY_FILES", 0x59433025, MagicCommon}
	TtyInfo      = Kind{"TTY_INFO", 0x59453036, MagicCommon}
	TtyData      = Kind{"TTY_DATA", 0x59413026, MagicCommon}
	GhostFile    = Kind{"GHOST_FILE", 0x52583605, MagicCommon}
	RemapFpath   = Kind{"REMAP_FPATH", 0x59133954, MagicCommon}
	Rlimit       = Kind{"RLIMIT", 0x57113925, MagicCommon}
	Sigact       = Kind{"SIGACT", 0x55344201, MagicCommon}
	Itimers      = Kind{"ITIMERS", 0x57464056, MagicCommon}
	PosixTimers  = Kind{"POSIX_TIMERS", 0x52603957, MagicCommon}
	Signal       = Kind{"SIGNAL", 0x59255647, MagicCommon}
	IpcnsShm     = Kind{"IPCNS_SHM", 0x46283044, MagicCommon}
	IpcnsSem     = Kind{"IPCNS_SEM", 0x59573019, MagicCommon}
)

// crhook's own image kinds. Their magics are outside CRIU's list (a test
// checks against go-criu's copy of it), so CRIU tools report them as
// unknown instead of misreading them.
var (
	CrhookInventory = Kind{"CRHOOK_INVENTORY", 0x4b4f4801, MagicCommon}
	CrhookTask      = Kind{"CRHOOK_TASK", 0x4b4f4802, MagicCommon}
	CrhookRegFiles  = Kind{"CRHOOK_REG_FILES", 0x4b4f4810, MagicCommon}
	CrhookSkOpts    = Kind{"CRHOOK_SK_OPTS", 0x4b4f4811, MagicCommon}
	CrhookIpc       = Kind{"CRHOOK_IPC", 0x4b4f4812, MagicCommon}
)

// framing is how entries follow each other in a kind's image.
type framing int

const (
	// Entries of one message type.
	framePlain framing = iota
	// A pagemap_head, then pagemap_entry entries.
	framePagemap
	// A ghost_file_entry, then either raw contents up to end of file or
	// (chunks set) ghost_chunk_entry entries each followed by len raw
	// bytes.
	frameGhost
)

type kindInfo struct {
	kind     Kind
	newEntry func() proto.Message
	framing  framing
	// extra returns the number of raw bytes that follow an entry.
	extra func(proto.Message) uint64
}

func pipeDataBytes(m proto.Message) uint64 { return uint64(m.(*pb.PipeDataEntry).GetBytes()) }
func skPacketBytes(m proto.Message) uint64 { return uint64(m.(*pb.SkPacketEntry).GetLength()) }

// semValueBytes: a semaphore set's u16 values, padded to 8 bytes.
func semValueBytes(m proto.Message) uint64 {
	return (uint64(m.(*pb.IpcSemEntry).GetNsems())*2 + 7) &^ 7
}

func entry[T any, PT interface {
	*T
	proto.Message
}]() func() proto.Message {
	return func() proto.Message { return PT(new(T)) }
}

var kinds = []kindInfo{
	{kind: Inventory, newEntry: entry[pb.InventoryEntry]()},
	{kind: Pstree, newEntry: entry[pb.PstreeEntry]()},
	{kind: Core, newEntry: entry[pb.CoreEntry]()},
	{kind: IDs, newEntry: entry[pb.TaskKobjIdsEntry]()},
	{kind: Creds, newEntry: entry[pb.CredsEntry]()},
	{kind: MM, newEntry: entry[pb.MmEntry]()},
	{kind: VMAs, newEntry: entry[pb.VmaEntry]()},
	{kind: Pagemap, newEntry: entry[pb.PagemapEntry](), framing: framePagemap},
	{kind: Fdinfo, newEntry: entry[pb.FdinfoEntry]()},
	{kind: Files, newEntry: entry[pb.FileEntry]()},
	{kind: RegFiles, newEntry: entry[pb.RegFileEntry]()},
	{kind: Fs, newEntry: entry[pb.FsEntry]()},
	{kind: Pipes, newEntry: entry[pb.PipeEntry]()},
	{kind: PipesData, newEntry: entry[pb.PipeDataEntry](), extra: pipeDataBytes},
	{kind: Fifo, newEntry: entry[pb.FifoEntry]()},
	{kind: FifoData, newEntry: entry[pb.PipeDataEntry](), extra: pipeDataBytes},
	{kind: UnixSk, newEntry: entry[pb.UnixSkEntry]()},
	{kind: InetSk, newEntry: entry[pb.InetSkEntry]()},
	{kind: SkQueues, newEntry: entry[pb.SkPacketEntry](), extra: skPacketBytes},
	{kind: Eventfd, newEntry: entry[pb.EventfdFileEntry]()},
	{kind: Eventpoll, newEntry: entry[pb.EventpollFileEntry]()},
	{kind: EventpollTfd, newEntry: entry[pb.EventpollTfdEntry]()},
	{kind: Signalfd, newEntry: entry[pb.SignalfdEntry]()},
	{kind: Timerfd, newEntry: entry[pb.TimerfdEntry]()},
	{kind: InotifyFile, newEntry: entry[pb.InotifyFileEntry]()},
	{kind: InotifyWd, newEntry: entry[pb.InotifyWdEntry]()},
	{kind: MemfdInode, newEntry: entry[pb.MemfdInodeEntry]()},
	{kind: TtyFiles, newEntry: entry[pb.TtyFileEntry]()},
	{kind: TtyInfo, newEntry: entry[pb.TtyInfoEntry]()},
	{kind: TtyData, newEntry: entry[pb.TtyDataEntry]()},
	{kind: GhostFile, newEntry: entry[pb.GhostFileEntry](), framing: frameGhost},
	{kind: RemapFpath, newEntry: entry[pb.RemapFilePathEntry]()},
	{kind: Rlimit, newEntry: entry[pb.RlimitEntry]()},
	{kind: Sigact, newEntry: entry[pb.SaEntry]()},
	{kind: Itimers, newEntry: entry[pb.ItimerEntry]()},
	{kind: PosixTimers, newEntry: entry[pb.PosixTimerEntry]()},
	{kind: Signal, newEntry: entry[pb.SiginfoEntry]()},
	{kind: CrhookInventory, newEntry: entry[pb.CrhookInventoryEntry]()},
	{kind: CrhookTask, newEntry: entry[pb.CrhookTaskEntry]()},
	{kind: CrhookRegFiles, newEntry: entry[pb.CrhookRegFileEntry]()},
	{kind: CrhookSkOpts, newEntry: entry[pb.CrhookSkOptsEntry]()},
	{kind: IpcnsShm, newEntry: entry[pb.IpcShmEntry]()},
	{kind: IpcnsSem, newEntry: entry[pb.IpcSemEntry](), extra: semValueBytes},
	{kind: CrhookIpc, newEntry: entry[pb.CrhookIpcEntry]()},
}

var kindsByMagic = func() map[uint32]*kindInfo {
	m := make(map[uint32]*kindInfo, len(kinds))
	for i := range kinds {
		if _, dup := m[kinds[i].kind.Magic]; dup {
			panic("image: duplicate magic for " + kinds[i].kind.Name)
		}
		m[kinds[i].kind.Magic] = &kinds[i]
	}
	return m
}()

// KindByMagic returns the kind whose own magic is magic.
func KindByMagic(magic uint32) (Kind, bool) {
	ki, ok := kindsByMagic[magic]
	if !ok {
		return Kind{}, false
	}
	return ki.kind, true
}
