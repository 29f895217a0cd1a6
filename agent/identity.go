package agent

import (
	"crypto/subtle"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync/atomic"
)

// identity is what the workload socket knows of a peer beyond SO_PEERCRED:
// the token it presented and, once a registration needs it, its cgroup,
// read from /proc with the pid-reuse check of peer.readProc.
type identity struct {
	cg    cgroupInfo
	cgErr error  // why the cgroup is unknown; nil when cg holds it
	token []byte // the presented token, nil when none; aliases the request buffer

	// pending: the cgroup is not read yet; peer.cgroup reads it on first
	// use, through conn for the peer's pidfd (SO_PEERPIDFD), which it then
	// holds until peer.release.
	pending  bool
	conn     *net.UnixConn
	pidfd    int
	hasPidfd bool
}

// procReads counts the /proc/PID/cgroup reads of workload-socket peers
// (tests check that matching by uid reads none).
var procReads atomic.Int64

// identify completes p for matching: the token it presented. Its cgroup is
// read only when a registration it could be asks for one (systemd_unit,
// cgroup, container_id, pod_uid) or a refusal describes it: uid and gid come with
// the connection (SO_PEERCRED), and most nodes match by them, so most
// requests never touch /proc.
func identify(p *peer, c *net.UnixConn, token []byte) {
	id := &identity{pending: true, conn: c}
	if len(token) > 0 {
		id.token = token
	}
	p.id = id
}

// cgroup returns p's cgroup, reading /proc/PID/cgroup the first time. An
// error (the file cannot be read, or the pid is no longer the peer's)
// means the cgroup is unknown: registrations that match by uid or gid
// alone still match (those credentials are fixed at connect time by the
// kernel) and every cgroup-based field does not.
func (p *peer) cgroup() (*cgroupInfo, error) {
	id := p.id
	if id == nil {
		return nil, errPeerGone
	}
	if id.pending {
		id.pending = false
		procReads.Add(1)
		q := *p
		if !q.hasPidfd && !q.gone && id.conn != nil {
			attachPidfd(id.conn, &q)
			id.pidfd, id.hasPidfd = q.pidfd, q.hasPidfd
		}
		b, err := q.readProc("cgroup", maxCgroupFile)
		if err == nil {
			id.cg, err = cgroupOf(b)
		}
		id.cgErr = err
	}
	if id.cgErr != nil {
		return nil, id.cgErr
	}
	return &id.cg, nil
}

// matchesPeer reports whether a peer is this workload: every field the
// registration gives must match. A peer that presents a token is matched
// only against registrations that ask for one, and a peer that presents
// none only against the others; the token is compared in constant time.
func (w *workload) matchesPeer(p peer) bool {
	m := &w.reg.Match
	if m.UID != nil && *m.UID != p.uid {
		return false
	}
	if m.GID != nil && *m.GID != p.gid {
		return false
	}
	var token []byte
	if p.id != nil {
		token = p.id.token
	}
	if m.Token != (token != nil) {
		return false
	}
	if m.Token {
		if w.token == nil || subtle.ConstantTimeCompare(token, w.token.Bytes()) != 1 {
			return false
		}
	}
	if m.SystemdUnit == "" && m.Cgroup == "" && m.ContainerID == "" && m.PodUID == "" {
		return true
	}
	cg, err := p.cgroup()
	if err != nil {
		return false
	}
	if m.SystemdUnit != "" {
		if strings.HasSuffix(m.SystemdUnit, ".slice") {
			if !contains(cg.slices, m.SystemdUnit) {
				return false
			}
		} else if cg.unit != m.SystemdUnit {
			return false
		}
	}
	if m.Cgroup != "" && !underCgroup(cg.path, m.Cgroup) {
		return false
	}
	if m.PodUID != "" && cg.podUID != m.PodUID {
		return false
	}
	if m.ContainerID != "" {
		if cg.containerID == "" || !strings.HasPrefix(cg.containerID, m.ContainerID) {
			return false
		}
		// A user names the cgroups of its own manager's subtree: only a
		// registration that pins the uid may trust an id found there.
		if cg.delegatedUID >= 0 && m.UID == nil {
			return false
		}
	}
	return true
}

// describe says what the agent saw of a peer, for a refusal: the fields a
// registration could match, never the token itself.
func (p peer) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "uid %d gid %d", p.uid, p.gid)
	var cg *cgroupInfo
	var err error
	if p.id != nil {
		cg, err = p.cgroup()
	}
	switch {
	case p.id == nil:
	case err != nil:
		fmt.Fprintf(&b, ", cgroup unknown (%s)", clipText(err.Error(), 200))
	default:
		fmt.Fprintf(&b, ", cgroup %s", clipText(cg.path, 512))
		if cg.unit != "" {
			fmt.Fprintf(&b, ", unit %s", cg.unit)
		} else {
			b.WriteString(", no systemd unit")
		}
		if cg.containerID != "" {
			fmt.Fprintf(&b, ", container %s", cg.containerID)
			if cg.delegatedUID >= 0 {
				fmt.Fprintf(&b, " (in user@%d.service)", cg.delegatedUID)
			}
		} else {
			b.WriteString(", no container")
		}
		if cg.podUID != "" {
			fmt.Fprintf(&b, ", pod %s", cg.podUID)
		}
	}
	if p.id != nil && p.id.token != nil {
		b.WriteString(", a token")
	} else {
		b.WriteString(", no token")
	}
	return b.String()
}

// clipText shortens s for a message and keeps it printable.
func clipText(s string, n int) string {
	if len(s) > n {
		s = s[:n] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// match finds the one registration this peer is. Called with a.mu held.
// Zero or several matches is a refusal whose message says what the agent
// saw of the caller (describe) and, for several, which registrations claim
// it: all of them match this very process, so naming them tells the
// caller nothing about anyone else.
func (a *Agent) match(p peer) (*workload, *Error) {
	var found []*workload
	a.index.candidates(p.uid, func(w *workload) {
		if w.matchesPeer(p) {
			found = append(found, w)
		}
	})
	switch len(found) {
	case 0:
		msg := "no workload is registered for this caller (" + p.describe() + ")"
		if p.id != nil && p.id.token != nil {
			msg += "; the token matches no registration it could belong to"
		}
		return nil, &Error{Code: CodeWorkloadUnknown, Message: msg}
	case 1:
		return found[0], nil
	}
	ids := make([]string, len(found))
	for i, w := range found {
		ids[i] = w.reg.ID
	}
	sort.Strings(ids)
	if len(ids) > 8 {
		ids = append(ids[:8], "…")
	}
	return nil, errorf(CodeWorkloadAmbiguous, "%d workloads match this caller (%s): %s; a registration must match exactly one",
		len(found), p.describe(), strings.Join(ids, ", "))
}

// workloadIndex narrows matching to the registrations a caller can be:
// those that name its uid, and those that name none. Without it every
// request tested every registration, and a node with 10,000 workloads
// spent most of its time there. Guarded by Agent.mu.
type workloadIndex struct {
	byUID map[uint32]map[string]*workload
	other map[string]*workload
}

func newWorkloadIndex() *workloadIndex {
	return &workloadIndex{byUID: map[uint32]map[string]*workload{}, other: map[string]*workload{}}
}

func (x *workloadIndex) add(w *workload) {
	if w.reg.Match.UID == nil {
		x.other[w.reg.ID] = w
		return
	}
	uid := *w.reg.Match.UID
	if x.byUID[uid] == nil {
		x.byUID[uid] = map[string]*workload{}
	}
	x.byUID[uid][w.reg.ID] = w
}

func (x *workloadIndex) remove(w *workload) {
	if w.reg.Match.UID == nil {
		if x.other[w.reg.ID] == w {
			delete(x.other, w.reg.ID)
		}
		return
	}
	uid := *w.reg.Match.UID
	if m := x.byUID[uid]; m != nil && m[w.reg.ID] == w {
		delete(m, w.reg.ID)
		if len(m) == 0 {
			delete(x.byUID, uid)
		}
	}
}

// candidates calls f for every registration a caller of uid may be.
func (x *workloadIndex) candidates(uid uint32, f func(*workload)) {
	for _, w := range x.byUID[uid] {
		f(w)
	}
	for _, w := range x.other {
		f(w)
	}
}
