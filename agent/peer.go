package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// peer is who is on the other end of a Unix socket, as the kernel says.
type peer struct {
	pid      int32
	uid, gid uint32

	// pidfd is the peer's pidfd (SO_PEERPIDFD) when hasPidfd: it stays
	// bound to the process that connected, so the agent can tell whether
	// the pid it reads /proc through still belongs to that process.
	pidfd    int
	hasPidfd bool
	gone     bool   // the kernel said the peer has already exited
	accepted uint64 // boot-clock ticks at accept, for the start-time check (0: unknown)

	// id is what the workload socket learned beyond the credentials: the
	// cgroup and the token presented. nil on the admin socket.
	id *identity
}

// soPeerPidfd is SO_PEERPIDFD (Linux 6.5), which x/sys does not name yet.
const soPeerPidfd = 77

// usePidfd may be turned off by tests to exercise the start-time check
// that kernels without SO_PEERPIDFD get.
var usePidfd = true

// errPeerGone: the process that connected exited, or its pid now belongs
// to another process, before the agent could read what it needed.
var errPeerGone = errors.New("the connecting process exited (or its pid was reused) before it could be identified")

// peerOf reads SO_PEERCRED: the credentials the peer had when it connected.
func peerOf(c *net.UnixConn) (peer, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return peer{}, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return peer{}, fmt.Errorf("peer credentials: %w", err)
	}
	if serr != nil {
		return peer{}, fmt.Errorf("peer credentials: %w", serr)
	}
	return peer{pid: cred.Pid, uid: cred.Uid, gid: cred.Gid}, nil
}

// verifiedPeerOf is peerOf plus what lets /proc be read safely later: the
// peer's pidfd where the kernel offers SO_PEERPIDFD, and the time of
// accept for the start-time check where it does not. The caller must
// release the peer.
func verifiedPeerOf(c *net.UnixConn) (peer, error) {
	accepted := bootTicks()
	p, err := peerOf(c)
	if err != nil {
		return p, err
	}
	p.accepted = accepted
	attachPidfd(c, &p)
	return p, nil
}

// attachPidfd takes the peer's pidfd (SO_PEERPIDFD), where the kernel has
// it; p.release closes it.
func attachPidfd(c *net.UnixConn, p *peer) {
	if !usePidfd {
		return
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) {
		pfd, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, soPeerPidfd)
		switch {
		case err == nil:
			p.pidfd, p.hasPidfd = pfd, true
		case errors.Is(err, unix.ESRCH), errors.Is(err, unix.EINVAL):
			// The kernel has SO_PEERPIDFD but the peer is no more.
			p.gone = true
		}
		// ENOPROTOOPT (an older kernel): the start-time check.
	})
}

// release closes the peer's pidfd, and the one its identity took.
func (p *peer) release() {
	if p.hasPidfd {
		unix.Close(p.pidfd)
		p.hasPidfd = false
	}
	if id := p.id; id != nil && id.hasPidfd {
		unix.Close(id.pidfd)
		id.hasPidfd = false
	}
}

// readProc reads /proc/PID/NAME of the peer, at most max bytes, and makes
// sure what it read belongs to the process that connected, not to one that
// took its pid since:
//   - with a pidfd: the pidfd's process is still alive (a zombie counts)
//     after the read, so the pid was its own all along;
//   - without: the process at that pid started no later than the accept,
//     and its start time is the same before and after the read (clock
//     ticks of 10 ms: a pid recycled within the tick of the accept passes).
//
// It returns errPeerGone when the process is not the peer any more.
func (p *peer) readProc(name string, max int) ([]byte, error) {
	if p.gone {
		return nil, errPeerGone
	}
	dir := "/proc/" + strconv.Itoa(int(p.pid))
	if p.hasPidfd {
		b, err := readProcFile(dir+"/"+name, max)
		if !pidfdAlive(p.pidfd) {
			return nil, errPeerGone
		}
		return b, err
	}
	before, err := procStartTicks(dir)
	if err != nil {
		return nil, errPeerGone
	}
	b, err := readProcFile(dir+"/"+name, max)
	after, aerr := procStartTicks(dir)
	if err := checkStart(before, after, aerr, p.accepted); err != nil {
		return nil, err
	}
	return b, err
}

// checkStart is the start-time check of readProc: the process must have
// started by the accept and kept its start time across the read.
func checkStart(before, after uint64, afterErr error, accepted uint64) error {
	if afterErr != nil || before != after {
		return errPeerGone
	}
	if accepted != 0 && before > accepted {
		return errPeerGone
	}
	return nil
}

// pidfdAlive reports whether the process a pidfd refers to has not been
// reaped. Signal 0 checks without sending; EPERM (a -dev agent asking about
// another user's process) still means the process exists.
func pidfdAlive(fd int) bool {
	err := unix.PidfdSendSignal(fd, 0, nil, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// readProcFile reads a /proc file of at most max bytes.
func readProcFile(path string, max int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(max)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > max {
		return nil, fmt.Errorf("%s is over %d bytes", path, max)
	}
	return b, nil
}

// procStartTicks reads the start time of a process (field 22 of
// /proc/PID/stat, clock ticks since boot).
func procStartTicks(dir string) (uint64, error) {
	b, err := readProcFile(dir+"/stat", 4096)
	if err != nil {
		return 0, err
	}
	return parseStatStart(b)
}

// parseStatStart finds field 22 of a /proc/PID/stat line. The second field
// (comm, in parentheses) may hold spaces and parentheses, so the fields
// are counted from the last ')'.
func parseStatStart(b []byte) (uint64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("stat: no command field")
	}
	// After ") " come fields 3, 4, …; the start time is field 22.
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 20 {
		return 0, errors.New("stat: too few fields")
	}
	v, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, errors.New("stat: start time is not a number")
	}
	return v, nil
}

// userHZ is the unit of /proc/PID/stat times: USER_HZ, 100 on every Linux
// architecture Go supports.
const userHZ = 100

// bootTicks is the boot clock (which /proc/PID/stat start times count
// from) in USER_HZ ticks; 0 if it cannot be read.
func bootTicks() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return uint64(ts.Sec)*userHZ + uint64(ts.Nsec)/(1e9/userHZ)
}

// userName maps a uid to its passwd name, or the number when it has none.
// A name found is cached for nameTTL, so a user renamed or removed is seen
// within that time; a uid with no name is looked up again each time (a
// user created later gets its name at once: the admin socket maps callers
// to accounts by it).
func (a *Agent) userName(uid uint32) string { return a.lookupName(uid, false) }

// recordName is userName for the user field of a workload-socket audit
// record, where the record's uid says who it was anyway: a uid with no
// name is looked up at most once per missTTL. Workloads often run as uids
// without a passwd entry (containers), and the lookup that fails reads all
// of NSS: without this, every request of such a workload paid for it.
func (a *Agent) recordName(uid uint32) string { return a.lookupName(uid, true) }

func (a *Agent) lookupName(uid uint32, trustMiss bool) string {
	if n, ok := a.names.Load(uid); ok {
		switch c := n.(type) {
		case cachedName:
			if time.Since(c.at) < nameTTL {
				return c.name
			}
		case cachedMiss:
			if trustMiss && time.Since(c.at) < missTTL {
				return c.name
			}
		}
	}
	name := strconv.FormatUint(uint64(uid), 10)
	if u, err := lookupUID(name); err == nil {
		a.names.Store(uid, cachedName{u.Username, time.Now()})
		return u.Username
	}
	a.names.Store(uid, cachedMiss{name, time.Now()})
	return name
}

type cachedName struct {
	name string
	at   time.Time
}

// cachedMiss: the uid had no name at that time; name is the number.
type cachedMiss cachedName

// nameTTL is how long a uid's name is trusted, missTTL how long a record
// trusts that a uid has none; lookupUID is user.LookupId, a variable for
// tests.
var (
	nameTTL   = 60 * time.Second
	missTTL   = 10 * time.Second
	lookupUID = user.LookupId
)

// isAdmin: root, a process in the admin group, or in -dev the user who
// started the agent. The supplementary groups come from /proc through
// readProc, so a recycled pid cannot lend its groups to a peer.
func (a *Agent) isAdmin(p peer) bool {
	if p.uid == 0 || (a.cfg.Dev && int(p.uid) == a.cfg.DevAdminUID) {
		return true
	}
	if a.adminGID < 0 {
		return false
	}
	if int(p.gid) == a.adminGID {
		return true
	}
	b, err := p.readProc("status", 64<<10)
	if err != nil {
		return false
	}
	for _, g := range parseStatusGroups(b) {
		if g == a.adminGID {
			return true
		}
	}
	return false
}

// parseStatusGroups reads the Groups: line of /proc/PID/status;
// SO_PEERCRED carries only the primary gid.
func parseStatusGroups(b []byte) []int {
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Groups:"); ok {
			var out []int
			for _, f := range strings.Fields(rest) {
				if g, err := strconv.Atoi(f); err == nil && g >= 0 {
					out = append(out, g)
				}
			}
			return out
		}
	}
	return nil
}
