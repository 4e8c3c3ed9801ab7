//go:build linux && amd64

package kabi

// From include/uapi/linux/inet_diag.h.

// InetDiagSockID is struct inet_diag_sockid. Ports and addresses are in
// network byte order, as the kernel stores them.
type InetDiagSockID struct {
	Sport  [2]byte
	Dport  [2]byte
	Src    [16]byte
	Dst    [16]byte
	If     uint32
	Cookie [2]uint32
}

// SizeofInetDiagSockID is sizeof(struct inet_diag_sockid).
const SizeofInetDiagSockID = 48

// InetDiagReqV2 is struct inet_diag_req_v2.
type InetDiagReqV2 struct {
	Family   uint8
	Protocol uint8
	Ext      uint8
	Pad      uint8
	States   uint32
	ID       InetDiagSockID
}

// SizeofInetDiagReqV2 is sizeof(struct inet_diag_req_v2).
const SizeofInetDiagReqV2 = 56

// InetDiagMsg is struct inet_diag_msg. For a listening TCP socket RQueue
// is the number of connections not yet accepted and WQueue the backlog.
type InetDiagMsg struct {
	Family  uint8
	State   uint8
	Timer   uint8
	Retrans uint8
	ID      InetDiagSockID
	Expires uint32
	RQueue  uint32
	WQueue  uint32
	UID     uint32
	Inode   uint32
}

// SizeofInetDiagMsg is sizeof(struct inet_diag_msg).
const SizeofInetDiagMsg = 72

// INET_DIAG_NOCOOKIE in a request's cookie matches any socket.
const INET_DIAG_NOCOOKIE = ^uint32(0)
