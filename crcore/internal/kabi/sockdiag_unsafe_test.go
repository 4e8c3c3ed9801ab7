//go:build linux && amd64

package kabi

import (
	"testing"
	"unsafe"
)

func TestSockDiagSizes(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"unix_diag_req", unsafe.Sizeof(UnixDiagReq{}), SizeofUnixDiagReq},
		{"unix_diag_msg", unsafe.Sizeof(UnixDiagMsg{}), SizeofUnixDiagMsg},
		{"unix_diag_vfs", unsafe.Sizeof(UnixDiagVfs{}), 8},
		{"unix_diag_rqlen", unsafe.Sizeof(UnixDiagRqlen{}), 8},
		{"inet_diag_sockid", unsafe.Sizeof(InetDiagSockID{}), SizeofInetDiagSockID},
		{"inet_diag_req_v2", unsafe.Sizeof(InetDiagReqV2{}), SizeofInetDiagReqV2},
		{"inet_diag_msg", unsafe.Sizeof(InetDiagMsg{}), SizeofInetDiagMsg},
	} {
		if c.got != c.want {
			t.Errorf("sizeof(%s) = %d, kernel expects %d", c.name, c.got, c.want)
		}
	}
}
