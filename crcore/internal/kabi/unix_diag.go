//go:build linux && amd64

package kabi

// From include/uapi/linux/unix_diag.h.

// UnixDiagReq is struct unix_diag_req.
type UnixDiagReq struct {
	Family   uint8
	Protocol uint8
	Pad      uint16
	States   uint32
	Ino      uint32
	Show     uint32
	Cookie   [2]uint32
}

// SizeofUnixDiagReq is sizeof(struct unix_diag_req).
const SizeofUnixDiagReq = 24

// UnixDiagMsg is struct unix_diag_msg.
type UnixDiagMsg struct {
	Family uint8
	Type   uint8
	State  uint8
	Pad    uint8
	Ino    uint32
	Cookie [2]uint32
}

// SizeofUnixDiagMsg is sizeof(struct unix_diag_msg).
const SizeofUnixDiagMsg = 16

// unix_diag_req.udiag_show bits.
const (
	UDIAG_SHOW_NAME    = 0x01
	UDIAG_SHOW_VFS     = 0x02
	UDIAG_SHOW_PEER    = 0x04
	UDIAG_SHOW_ICONS   = 0x08
	UDIAG_SHOW_RQLEN   = 0x10
	UDIAG_SHOW_MEMINFO = 0x20
	UDIAG_SHOW_UID     = 0x40
)

// Attributes of a unix_diag_msg reply.
const (
	UNIX_DIAG_NAME     = 0
	UNIX_DIAG_VFS      = 1
	UNIX_DIAG_PEER     = 2
	UNIX_DIAG_ICONS    = 3
	UNIX_DIAG_RQLEN    = 4
	UNIX_DIAG_MEMINFO  = 5
	UNIX_DIAG_SHUTDOWN = 6
	UNIX_DIAG_UID      = 7
)

// UnixDiagVfs is struct unix_diag_vfs: the inode of a bound socket's file.
type UnixDiagVfs struct {
	Ino uint32
	Dev uint32
}

// UnixDiagRqlen is struct unix_diag_rqlen. For a listening socket RQueue
// is the number of connections not yet accepted and WQueue the backlog;
// otherwise they are the bytes queued to read and to write.
type UnixDiagRqlen struct {
	RQueue uint32
	WQueue uint32
}
