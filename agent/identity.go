package agent

import (
	"crypto/subtle"
	"fmt"
	"sort"
	"strings"
)

// identity is what the workload socket knows of a peer beyond SO_PEERCRED:
// its cgroup, read from /proc with the pid-reuse check of peer.readProc,
// and the token it presented.
type identity struct {
	cg    cgroupInfo
	cgErr error  // why the cgroup is unknown; nil when cg holds it
	token []byte // the presented token, nil when none; aliases the request buffer
}

// identify completes p for matching: its cgroup and presented token. A
// cgroup that cannot be read leaves cgErr set, so registrations that match
// by uid or gid alone still match (those credentials are fixed at connect
// time by the kernel) and every cgroup-based field does not.
func identify(p *peer, token []byte) {
	id := &identity{}
	if len(token) > 0 {
		id.token = token
	}
	b, err := p.readProc("cgroup", maxCgroupFile)
	if err == nil {
		id.cg, err = cgroupOf(b)
	}
	id.cgErr = err
	p.id = id
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
	var id identity
	if p.id != nil {
		id = *p.id
	} else {
		id.cgErr = errPeerGone
	}
	if m.Token != (id.token != nil) {
		return false
	}
	if m.Token {
		if w.token == nil || subtle.ConstantTimeCompare(id.token, w.token.Bytes()) != 1 {
			return false
		}
	}
	if m.SystemdUnit == "" && m.Cgroup == "" && m.ContainerID == "" {
		return true
	}
	if id.cgErr != nil {
		return false
	}
	cg := &id.cg
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
	switch {
	case p.id == nil:
	case p.id.cgErr != nil:
		fmt.Fprintf(&b, ", cgroup unknown (%s)", clipText(p.id.cgErr.Error(), 200))
	default:
		cg := p.id.cg
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
