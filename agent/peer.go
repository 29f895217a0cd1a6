package agent

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// peer is who is on the other end of a Unix socket, as the kernel says.
type peer struct {
	pid      int32
	uid, gid uint32
}

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

// userName maps a uid to its passwd name, or the number when it has none.
func (a *Agent) userName(uid uint32) string {
	if n, ok := a.names.Load(uid); ok {
		return n.(string)
	}
	name := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	a.names.Store(uid, name)
	return name
}

// isAdmin: root, a process in the admin group, or in -dev the user who
// started the agent.
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
	for _, g := range procGroups(p.pid) {
		if g == a.adminGID {
			return true
		}
	}
	return false
}

// procGroups reads the supplementary groups of a process from
// /proc/PID/status; SO_PEERCRED carries only the primary gid.
func procGroups(pid int32) []int {
	f, err := os.Open("/proc/" + strconv.Itoa(int(pid)) + "/status")
	if err != nil {
		return nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Groups:"); ok {
			var out []int
			for _, f := range strings.Fields(rest) {
				if g, err := strconv.Atoi(f); err == nil {
					out = append(out, g)
				}
			}
			return out
		}
	}
	return nil
}
