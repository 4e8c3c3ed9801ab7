//go:build linux && amd64

package crcore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore/internal/kabi"
	"github.com/crhook/crhook/crcore/internal/procfs"
	pb "github.com/crhook/crhook/proto"
)

// rlimNLimits is RLIM_NLIMITS (include/uapi/asm-generic/resource.h).
const rlimNLimits = 16

var rlimitNames = [rlimNLimits]string{"RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CORE",
	"RLIMIT_RSS", "RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_MEMLOCK", "RLIMIT_AS", "RLIMIT_LOCKS",
	"RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_RTPRIO", "RLIMIT_RTTIME"}

// restoreRlimits sets the process's limits from inside it. Raising a hard
// limit above the restorer's needs CAP_SYS_RESOURCE: without it the limit
// is named in the error.
func restoreRlimits(r *remote, lims []*pb.RlimitEntry) error {
	if len(lims) > rlimNLimits {
		return fmt.Errorf("%d rlimits, at most %d: %w", len(lims), rlimNLimits, ErrBadImage)
	}
	for res, l := range lims {
		if l.GetCur() > l.GetMax() {
			return fmt.Errorf("%s: soft limit %d above hard limit %d: %w", rlimitNames[res], l.GetCur(), l.GetMax(), ErrBadImage)
		}
	}
	// Read every limit, then set those that differ (a batch, batch.go).
	// They are read as the dump reads them (readRlimits): a restored
	// task mostly has its image's limits already (its husk's,
	// inherited), and then costs no stop.
	mark := r.used
	defer func() { r.used = mark }()
	have, err := readRlimits(r.pid(), r)
	if err != nil {
		return err
	}
	set := r.batch()
	var setRes []int
	for res, l := range lims {
		if have[res].GetCur() == l.GetCur() && have[res].GetMax() == l.GetMax() {
			continue
		}
		var w [16]byte
		binary.LittleEndian.PutUint64(w[:], l.GetCur())
		binary.LittleEndian.PutUint64(w[8:], l.GetMax())
		p, err := r.put(w[:])
		if err != nil {
			return err
		}
		set.add("prlimit64 "+rlimitNames[res], unix.SYS_PRLIMIT64, 0, uint64(res), p, 0)
		setRes = append(setRes, res)
	}
	done, err := set.run()
	if errors.Is(err, unix.EPERM) && len(done) < len(setRes) {
		res := setRes[len(done)]
		return fmt.Errorf("%s: the image's hard limit %s is above the restorer's %s; raising it needs CAP_SYS_RESOURCE: %w",
			rlimitNames[res], rlimString(lims[res].GetMax()), rlimString(have[res].GetMax()), err)
	}
	return err
}

func rlimString(v uint64) string {
	if v == unix.RLIM_INFINITY {
		return "unlimited"
	}
	return strconv.FormatUint(v, 10)
}

// dumpCreds reads a thread's credentials from its status (read by
// dumpEarly) and its securebits.
func dumpCreds(th *dthread, securebits uint32) error {
	st := th.attrs.status
	ids := func(key string) ([]uint32, error) {
		v, err := st.Ints(key)
		if err != nil {
			return nil, err
		}
		if len(v) != 4 {
			return nil, fmt.Errorf("status %s: %v, want 4 ids", key, v)
		}
		return []uint32{uint32(v[0]), uint32(v[1]), uint32(v[2]), uint32(v[3])}, nil
	}
	uids, err := ids("Uid")
	if err != nil {
		return err
	}
	gids, err := ids("Gid")
	if err != nil {
		return err
	}
	var groups []uint32
	for _, f := range strings.Fields(st["Groups"]) {
		g, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return fmt.Errorf("status Groups %q: %w", st["Groups"], err)
		}
		groups = append(groups, uint32(g))
	}
	caps := map[string]uint64{}
	for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		if caps[k], err = st.Uint(k, 16); err != nil {
			return err
		}
	}
	split := func(v uint64) []uint32 { return []uint32{uint32(v), uint32(v >> 32)} }
	th.attrs.creds = &pb.CredsEntry{
		Uid: proto.Uint32(uids[0]), Euid: proto.Uint32(uids[1]), Suid: proto.Uint32(uids[2]), Fsuid: proto.Uint32(uids[3]),
		Gid: proto.Uint32(gids[0]), Egid: proto.Uint32(gids[1]), Sgid: proto.Uint32(gids[2]), Fsgid: proto.Uint32(gids[3]),
		CapInh: split(caps["CapInh"]), CapPrm: split(caps["CapPrm"]), CapEff: split(caps["CapEff"]), CapBnd: split(caps["CapBnd"]),
		Secbits: proto.Uint32(securebits),
		Groups:  groups,
	}
	th.attrs.ambient = caps["CapAmb"]
	nnp, err := st.Uint("NoNewPrivs", 10)
	if err != nil {
		return err
	}
	th.attrs.noNewPrivs = nnp != 0
	return nil
}

func join64(w []uint32) uint64 {
	var v uint64
	if len(w) > 0 {
		v = uint64(w[0])
	}
	if len(w) > 1 {
		v |= uint64(w[1]) << 32
	}
	return v
}

// threadCreds is a restored thread's credentials as its status shows them.
type threadCreds struct {
	uids, gids             [4]uint32
	groups                 []uint32
	inh, prm, eff, bnd, am uint64
}

func readThreadCreds(tid int) (*threadCreds, error) {
	b, err := procfs.ReadFile(procfs.Path(tid, "status"))
	if err != nil {
		return nil, err
	}
	st := procfs.ParseStatus(b)
	c := &threadCreds{}
	for _, k := range []struct {
		key string
		out *[4]uint32
	}{{"Uid", &c.uids}, {"Gid", &c.gids}} {
		v, err := st.Ints(k.key)
		if err != nil {
			return nil, fmt.Errorf("status %s of %d: %w", k.key, tid, err)
		}
		if len(v) != 4 {
			return nil, fmt.Errorf("status %s of %d: %v, want 4 values", k.key, tid, v)
		}
		for i := range v {
			k.out[i] = uint32(v[i])
		}
	}
	for _, f := range strings.Fields(st["Groups"]) {
		g, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return nil, err
		}
		c.groups = append(c.groups, uint32(g))
	}
	for _, k := range []struct {
		key string
		out *uint64
	}{{"CapInh", &c.inh}, {"CapPrm", &c.prm}, {"CapEff", &c.eff}, {"CapBnd", &c.bnd}, {"CapAmb", &c.am}} {
		if *k.out, err = st.Uint(k.key, 16); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// errLessPrivileged: a task restored into a container keeps the
// container's credentials, which grant less than its image's.
var errLessPrivileged = errors.New("the container's credentials are kept")

// birthState is what every restored thread was born with, learnt once
// per restore from the first thread that can tell: all of them are
// cloned, from the husk or from the container's init, before any
// credential or login uid is restored, so until a thread's own are set
// they are those. The credentials and securebits are taken only from a
// thread whose credentials stay as they came (the common case: an image
// of the restorer's own). This saves a status read and an injected prctl
// per thread (a tenth of a millisecond a thread for a process of 1000
// threads), and a loginuid read per thread.
type birthState struct {
	credsKnown bool
	secbits    uint64
	creds      threadCreds

	loginuidKnown bool
	loginuid      int64
}

// restoreCreds gives a restored thread its credentials, from inside it:
// groups, gids, then the uids with SECBIT_KEEP_CAPS so that the
// permitted set survives the change, then the capability sets (the
// effective one regained first, for the steps that need CAP_SETPCAP:
// ambient raises, bounding set drops, securebits), last the final sets.
// Every step only lowers what the restorer holds: an image asking for a
// capability the restorer lacks is an error naming it, never a grant;
// restored into a container (container set), the container's own
// credentials stand instead (DESIGN section 2: a restore never gives a
// process more privilege than the container's config grants), and
// errLessPrivileged says so.
func restoreCreds(r *remote, th *threadImage, container bool, born *birthState) error {
	c := th.core.GetThreadCore().GetCreds()
	if c == nil {
		return nil
	}
	amb := th.ext.GetCapAmbient()
	inh, prm, eff, bnd := join64(c.GetCapInh()), join64(c.GetCapPrm()), join64(c.GetCapEff()), join64(c.GetCapBnd())
	r.reset()
	var (
		sb  uint64
		cur *threadCreds
		err error
	)
	if born != nil && born.credsKnown {
		c := born.creds
		sb, cur = born.secbits, &c
	} else {
		if cur, err = readThreadCreds(r.pid()); err != nil {
			return err
		}
		if sb, err = r.call("prctl(PR_GET_SECUREBITS)", unix.SYS_PRCTL, unix.PR_GET_SECUREBITS); err != nil {
			return err
		}
	}
	uids := [4]uint32{c.GetUid(), c.GetEuid(), c.GetSuid(), c.GetFsuid()}
	gids := [4]uint32{c.GetGid(), c.GetEgid(), c.GetSgid(), c.GetFsgid()}
	if uids == cur.uids && gids == cur.gids && slices.Equal(c.GetGroups(), cur.groups) &&
		inh == cur.inh && prm == cur.prm && eff == cur.eff && bnd == cur.bnd && amb == cur.am && uint64(c.GetSecbits()) == sb {
		if born != nil && !born.credsKnown {
			born.credsKnown, born.secbits, born.creds = true, sb, *cur
			born.creds.groups = slices.Clone(cur.groups)
		}
		return nil
	}
	if more := (prm | eff | inh | amb) &^ cur.prm &^ cur.inh; more != 0 {
		if container {
			return fmt.Errorf("the image holds capabilities %#x the container lacks: %w", more, errLessPrivileged)
		}
		return fmt.Errorf("credentials: the image holds capabilities %#x the restorer lacks: %w", more, unix.EPERM)
	}
	if more := bnd &^ cur.bnd; more != 0 {
		if container {
			return fmt.Errorf("the image's bounding set has capabilities %#x the container's lacks: %w", more, errLessPrivileged)
		}
		return fmt.Errorf("credentials: the image's bounding set has capabilities %#x the restorer's lacks: %w", more, unix.EPERM)
	}
	capset := func(e, p, i uint64) error {
		var b bytes.Buffer
		putLE(&b, kabi.CapUserHeader{Version: kabi.LINUX_CAPABILITY_VERSION_3})
		putLE(&b, [2]kabi.CapUserData{
			{Effective: uint32(e), Permitted: uint32(p), Inheritable: uint32(i)},
			{Effective: uint32(e >> 32), Permitted: uint32(p >> 32), Inheritable: uint32(i >> 32)},
		})
		r.reset()
		hdr, err := r.put(b.Bytes())
		if err != nil {
			return err
		}
		_, err = r.call("capset", unix.SYS_CAPSET, hdr, hdr+kabi.SizeofCapUserHeader)
		return err
	}

	gb := make([]byte, 4*len(c.GetGroups()))
	for i, g := range c.GetGroups() {
		binary.LittleEndian.PutUint32(gb[4*i:], g)
	}
	r.reset()
	gp := uint64(0)
	if len(gb) > 0 {
		if gp, err = r.put(gb); err != nil {
			return err
		}
	}
	if _, err := r.call("setgroups", unix.SYS_SETGROUPS, uint64(len(c.GetGroups())), gp); err != nil {
		return err
	}
	if _, err := r.call("setresgid", unix.SYS_SETRESGID, uint64(gids[0]), uint64(gids[1]), uint64(gids[2])); err != nil {
		return err
	}
	// setfsgid and setfsuid return the old id, never an error: checked
	// below through the status.
	_, _ = r.call("setfsgid", unix.SYS_SETFSGID, uint64(gids[3]))
	if _, err := r.call("prctl(PR_SET_SECUREBITS)", unix.SYS_PRCTL, unix.PR_SET_SECUREBITS, sb|kabi.SECBIT_KEEP_CAPS); err != nil {
		return err
	}
	if _, err := r.call("setresuid", unix.SYS_SETRESUID, uint64(uids[0]), uint64(uids[1]), uint64(uids[2])); err != nil {
		return err
	}
	// A uid change cleared the effective set; take back what is
	// permitted for the steps that need CAP_SETPCAP and CAP_SETUID.
	if err := capset(cur.prm, cur.prm, inh); err != nil {
		return err
	}
	_, _ = r.call("setfsuid", unix.SYS_SETFSUID, uint64(uids[3])) // checked like setfsgid
	if _, err := r.call("prctl(PR_CAP_AMBIENT_CLEAR_ALL)", unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return err
	}
	for c := 0; c < 64; c++ {
		if amb&(1<<c) != 0 {
			if _, err := r.call(fmt.Sprintf("prctl(PR_CAP_AMBIENT_RAISE, %d)", c), unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uint64(c), 0, 0); err != nil {
				return err
			}
		}
	}
	for c := 0; c < 64; c++ {
		if cur.bnd&(1<<c) != 0 && bnd&(1<<c) == 0 {
			if _, err := r.call(fmt.Sprintf("prctl(PR_CAPBSET_DROP, %d)", c), unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uint64(c)); err != nil {
				return err
			}
		}
	}
	if _, err := r.call("prctl(PR_SET_SECUREBITS)", unix.SYS_PRCTL, unix.PR_SET_SECUREBITS, uint64(c.GetSecbits())); err != nil {
		return err
	}
	if err := capset(eff, prm, inh); err != nil {
		return err
	}
	got, err := readThreadCreds(r.pid())
	if err != nil {
		return err
	}
	if got.uids != uids || got.gids != gids {
		return fmt.Errorf("credentials: uids %v gids %v after restore, want %v %v", got.uids, got.gids, uids, gids)
	}
	return nil
}
