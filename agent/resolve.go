package agent

import (
	"encoding/binary"
	"hash/maphash"
	"runtime"
	"sort"
	"sync"

	"github.com/envlet/envlet/agent/wire"
	"github.com/envlet/envlet/cache"
)

// How a workload's environment is resolved and served.
//
// Nothing resolved is stored per workload: a workload keeps its own layers
// (runtime, execution; ownlayer.go), the model keeps every stored layer
// sorted by name (model.go, varView), and envFrame merges them when the
// workload asks, straight into the locked Buf it is served from. What is
// kept per workload is a keyed 64-bit digest of what it last received
// (maphash under a per-process random seed: nothing an attacker without the
// process's memory can test a guess against), so a change of the model
// tells which workloads now receive something else: those get envRev moved
// and their watchers notified, in the same write-locked section as the
// change, so no one is served new content under an old envRev.
//
// The merge is a k-way merge of layers that are each sorted by name,
// highest first (docs/design.md §2: execution, runtime, account, project, groups
// last first, platform): for each name in order the highest layer that
// holds it wins. A reserved name counts only in the platform layer; a
// protected name (protect.go) not in the project and group layers. A
// variable set --from-secret takes a secret the workload may read: in the
// account layer its user's private secret, else the project's; in the
// project and group layers only the project's (a private secret never
// reaches a workload through a layer its user does not write). It is left
// out when there is none. Explain takes the slower path of layersFor
// and resolve, which also reports what each winner overrode; resolve is the
// reference the merge is tested against.

// Layer names as explain reports them (docs/design.md §2).
const (
	layerExecution = "execution"
	layerRuntime   = "runtime"
	layerAccount   = "account"
	layerProject   = "project"
	layerGroup     = "group:" // + the group's name
	layerPlatform  = "platform"
)

// layerVar is one variable of one layer as resolution sees it. value
// aliases locked memory; it is only valid while Agent.mu is held.
type layerVar struct {
	name   string
	value  []byte
	secret bool
	scope  string // set --from-secret: whose secret it took ("secret:user:alice")
}

type layer struct {
	name    string
	vars    []layerVar
	leftOut []leftOut // stored variables this workload does not get, and why (names only)
}

// leftOut is a stored variable a layer does not pass on: its secret is not
// one the layer reaches, or its name is protected (protect.go).
type leftOut struct{ name, reason string }

// resolved is the winner for one name.
type resolved struct {
	name      string
	value     []byte // empty: the name is cleared
	secret    bool
	scope     string // as layerVar.scope
	layer     string
	overrides []string
}

// resolveState is the Agent's resolution state beside the model.
type resolveState struct {
	names   nameTable    // names of workloads' own variables
	seed    maphash.Seed // keys the digests of what workloads receive
	seeded  bool
	mergers sync.Pool // *merger, for envFrame
}

// layersFor gathers the layers for user in project, highest first
// (docs/design.md §2). w may be nil (explain for a user/project pair). Called with
// a.mu held.
func (a *Agent) layersFor(user, projectName string, w *workload) []layer {
	var ls []layer
	stored := func(name string, set varSet) {
		ls = append(ls, a.storedLayer(name, set, user, projectName))
	}
	if w != nil {
		ls = append(ls, a.ownLayer(layerExecution, w.execution), a.ownLayer(layerRuntime, w.runtime))
	}
	p := a.model.liveProject(projectName)
	if p != nil && p.isMember(user) {
		if u := a.model.users[user]; u != nil {
			stored(layerAccount, u.vars)
		}
	}
	if p != nil {
		stored(layerProject, p.vars)
		// A later group beats an earlier one, so the last comes first.
		a.model.eachGroup(p, func(name string, g *group) { stored(layerGroup+name, g.vars) })
	}
	ls = append(ls, a.platform)
	return ls
}

// resolve merges layers (highest first) name by name. Reserved names count
// only in the platform layer; elsewhere they are skipped and reported
// through ignored (names only). The result is sorted by name.
func (a *Agent) resolve(layers []layer, ignored func(layer, name string)) []resolved {
	byName := map[string]int{}
	var out []resolved
	for _, l := range layers {
		for _, v := range l.vars {
			if l.name != layerPlatform && a.reserved.Has(v.name) {
				if ignored != nil {
					ignored(l.name, v.name)
				}
				continue
			}
			if i, ok := byName[v.name]; ok {
				out[i].overrides = append(out[i].overrides, l.name)
				continue
			}
			byName[v.name] = len(out)
			out = append(out, resolved{name: v.name, value: v.value, secret: v.secret, scope: v.scope, layer: l.name})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// sortPlatform puts the platform layer in name order, as the merge walks
// it. The sort is stable: of a name given twice the first still wins.
func sortPlatform(l layer) layer {
	sort.SliceStable(l.vars, func(i, j int) bool { return l.vars[i].name < l.vars[j].name })
	return l
}

// Layer kinds of a merge source.
const (
	kindExecution = iota
	kindRuntime
	kindAccount
	kindProject
	kindGroup
	kindPlatform
)

// mergeSrc is one layer as the merge walks it, and its current variable.
type mergeSrc struct {
	kind   uint8
	group  string      // kindGroup: the group's name
	own    []byte      // execution, runtime: records left (ownlayer.go)
	stored []sortedVar // account, project, groups: variables left
	plain  []layerVar  // platform: variables left
	name   string
	val    []byte
	secret bool
}

func (s *mergeSrc) layerName() string {
	switch s.kind {
	case kindExecution:
		return layerExecution
	case kindRuntime:
		return layerRuntime
	case kindAccount:
		return layerAccount
	case kindProject:
		return layerProject
	case kindGroup:
		return layerGroup + s.group
	}
	return layerPlatform
}

// merger merges one workload's layers; its slices are reused from one
// workload to the next. It emits the result in one of two forms: as the
// Env entries it is served as, in out (values alias locked memory, valid
// while Agent.mu is held; secret says which came from a secret, when
// asked for), or, for a digest, encoded straight into enc, a locked
// scratch Buf.
type merger struct {
	srcs    []mergeSrc
	out     []wire.Entry
	secret  []bool
	secrets bool   // fill secret
	encode  bool   // fill enc, not out
	enc     []byte // u32 count, then the entries
	count   uint32
	scratch *cache.Buf // enc's memory
	user    string
	proj    string
	id      string
	warn    bool // log what is left out (on a change, never per serve)
	a       *Agent
}

// run merges w's layers into m.out. Called with a.mu held.
func (m *merger) run(a *Agent, w *workload, warn bool) {
	m.a, m.warn = a, warn
	m.user, m.proj, m.id = w.reg.User, w.reg.Project, w.reg.ID
	m.srcs = m.srcs[:0]
	m.count = 0
	m.out = m.out[:0]
	m.secret = m.secret[:0]
	if m.encode {
		if m.scratch.Len() < 4 {
			m.scratch = a.pool.Alloc(4096)
		}
		m.enc = m.scratch.Bytes()[:4] // the count, set at the end
	}
	if b := w.execution.Bytes(); len(b) > 0 {
		m.srcs = append(m.srcs, mergeSrc{kind: kindExecution, own: b})
	}
	if b := w.runtime.Bytes(); len(b) > 0 {
		m.srcs = append(m.srcs, mergeSrc{kind: kindRuntime, own: b})
	}
	p := a.model.liveProject(m.proj)
	if p != nil && p.isMember(m.user) {
		if u := a.model.users[m.user]; u != nil {
			m.addStored(kindAccount, "", &u.view, u.vars)
		}
	}
	if p != nil {
		m.addStored(kindProject, "", &p.view, p.vars)
		a.model.eachGroup(p, func(name string, g *group) { m.addStored(kindGroup, name, &g.view, g.vars) })
	}
	if len(a.platform.vars) > 0 {
		m.srcs = append(m.srcs, mergeSrc{kind: kindPlatform, plain: a.platform.vars})
	}

	// Each source on its first variable; the empty ones drop out. live
	// keeps the layers' order, highest first.
	live := m.srcs[:0]
	for i := range m.srcs {
		if m.next(&m.srcs[i]) {
			live = append(live, m.srcs[i])
		}
	}
	for len(live) > 1 {
		// The smallest name, b (of equal ones the first: the highest
		// layer), and the smallest name of the others, second.
		b, o := 0, 1
		if live[1].name < live[0].name {
			b, o = 1, 0
		}
		for i := 2; i < len(live); i++ {
			switch n := live[i].name; {
			case n < live[b].name:
				b, o = i, b
			case n < live[o].name:
				o = i
			}
		}
		second := live[o].name
		if s := &live[b]; s.name < second {
			// b alone holds every name below second: take them in a row.
			ok := true
			for ok && s.name < second {
				m.emit(s)
				ok = m.skip(s)
			}
			if !ok {
				live = append(live[:b], live[b+1:]...)
			}
			continue
		}
		name := live[b].name
		m.emit(&live[b])
		for i := 0; i < len(live); {
			s := &live[i]
			ok := true
			for ok && s.name == name {
				ok = m.next(s)
			}
			if !ok {
				live = append(live[:i], live[i+1:]...)
				continue
			}
			i++
		}
	}
	if len(live) == 1 {
		for s, ok := &live[0], true; ok; {
			m.emit(s)
			ok = m.skip(s)
		}
	}
	clear(m.srcs)
	if m.encode {
		binary.BigEndian.PutUint32(m.enc, m.count)
	}
}

// skip moves s past its current name (past every variable of that name:
// a hand-built platform layer may hold one twice).
func (m *merger) skip(s *mergeSrc) bool {
	name := s.name
	ok := m.next(s)
	for ok && s.name == name {
		ok = m.next(s)
	}
	return ok
}

func (m *merger) emit(s *mergeSrc) {
	if !m.encode {
		m.out = append(m.out, wire.Entry{Name: s.name, Value: s.val, Unset: len(s.val) == 0})
		if m.secrets {
			m.secret = append(m.secret, s.secret)
		}
		return
	}
	// As wire.AppendEnv writes an entry: flags (bit 0: unset), str16
	// name, bytes32 value.
	if need := 7 + len(s.name) + len(s.val); cap(m.enc)-len(m.enc) < need {
		m.grow(need)
	}
	var flags byte
	if len(s.val) == 0 {
		flags = 1
	}
	b := append(m.enc, flags, byte(len(s.name)>>8), byte(len(s.name)))
	b = append(b, s.name...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(s.val)))
	m.enc = append(b, s.val...)
	m.count++
}

// grow moves enc to a larger scratch Buf with room for need more bytes.
func (m *merger) grow(need int) {
	size := 4096
	for size < len(m.enc)+need {
		size *= 2
	}
	next := m.a.pool.Alloc(size)
	m.enc = append(next.Bytes()[:0], m.enc...)
	m.scratch.Free()
	m.scratch = next
}

// addStored adds a stored layer, in the order of its view; a view that is
// stale (the model changed and was not resolved since) is sorted afresh.
func (m *merger) addStored(kind uint8, group string, v *varView, set varSet) {
	if len(set) == 0 {
		return
	}
	list := v.list
	if !v.ok {
		list = sortVars(nil, set, m.a.reserved, m.a.protected)
	}
	m.srcs = append(m.srcs, mergeSrc{kind: kind, group: group, stored: list})
}

// next moves s to its next variable that counts, skipping (and, when
// m.warn, logging) a reserved name outside the platform layer and a
// variable whose secret the workload cannot read. It reports false when s
// has none left.
func (m *merger) next(s *mergeSrc) bool {
	a := m.a
	switch s.kind {
	case kindExecution, kindRuntime:
		for {
			id, val, rest, ok := ownRecord(s.own)
			if !ok {
				return false
			}
			s.own = rest
			if a.rs.names.reserved[id] {
				m.ignored(s, a.rs.names.names[id])
				continue
			}
			s.name, s.val, s.secret = a.rs.names.names[id], val, false
			return true
		}
	case kindPlatform:
		if len(s.plain) == 0 {
			return false
		}
		x := s.plain[0]
		s.plain = s.plain[1:]
		s.name, s.val, s.secret = x.name, x.value, x.secret
		return true
	default:
		for len(s.stored) > 0 {
			x := s.stored[0]
			s.stored = s.stored[1:]
			val, secret := x.v.value(), x.v.secret()
			if x.protected && s.kind != kindAccount {
				if m.warn {
					a.log.Warn("leaving out a protected name outside the account layer", "workload", m.id, "layer", s.layerName(), "name", x.name)
				}
				continue
			}
			if x.v.fromRef() {
				sec, _ := a.refSecret(s.kind == kindAccount, m.user, m.proj, string(val))
				if sec == nil {
					if m.warn {
						a.log.Warn("leaving out a variable whose secret this workload cannot read", "workload", m.id, "layer", s.layerName(), "name", x.name)
					}
					continue
				}
				val, secret = sec.value(), true
			}
			if x.reserved {
				m.ignored(s, x.name)
				continue
			}
			s.name, s.val, s.secret = x.name, val, secret
			return true
		}
		return false
	}
}

func (m *merger) ignored(s *mergeSrc, name string) {
	if m.warn {
		m.a.log.Warn("ignoring a reserved name outside the platform layer", "workload", m.id, "layer", s.layerName(), "name", name)
	}
}

// release drops what m points to (locked memory, the model) before it is
// kept for reuse.
func (m *merger) release() {
	clear(m.out)
	m.out = m.out[:0]
	m.secrets = false
	m.a = nil
}

func (a *Agent) getMerger() *merger {
	if m, ok := a.rs.mergers.Get().(*merger); ok {
		return m
	}
	return &merger{}
}

func (a *Agent) putMerger(m *merger) {
	m.release()
	a.rs.mergers.Put(m)
}

// envFrame returns w's environment encoded as the Env frame it is served
// as (at the model's revision), in a new locked Buf the caller frees; it
// stays valid after a.mu is released. Called with a.mu held (read or
// write).
func (a *Agent) envFrame(w *workload) *cache.Buf {
	m := a.getMerger()
	m.run(a, w, false)
	buf := a.pool.Alloc(wire.EnvSize(m.out))
	wire.AppendEnv(buf.Bytes()[:0], uint64(a.model.rev), m.out)
	a.putMerger(m)
	return buf
}

// envBody is an Env frame less its header and revision: what a workload
// actually receives as its environment.
func envBody(frame []byte) []byte {
	const skip = wire.HeaderSize + 8 // frame header, revision
	if len(frame) < skip {
		return nil
	}
	return frame[skip:]
}

// digester computes the digests of workloads' environments: a merger
// that encodes into a locked scratch Buf, reused from one workload to the
// next; free zeroes the scratch.
type digester struct {
	m merger
}

func (d *digester) digest(a *Agent, w *workload) uint64 {
	d.m.encode = true
	d.m.run(a, w, true)
	return maphash.Bytes(a.rs.seed, d.m.enc)
}

func (d *digester) free() {
	d.m.release()
	d.m.enc = nil
	d.m.scratch.Free()
	d.m.scratch = nil
}

// prepareResolve brings the model's sorted views up to date. Called with
// a.mu held for writing before workloads are resolved.
func (a *Agent) prepareResolve() {
	if !a.rs.seeded {
		a.rs.seed, a.rs.seeded = maphash.MakeSeed(), true
	}
	a.model.refreshViews(a.reserved, a.protected)
}

// resolveWorkload resolves w after its registration changed. Called with
// a.mu held for writing.
func (a *Agent) resolveWorkload(w *workload) {
	a.prepareResolve()
	var d digester
	sum := d.digest(a, w)
	d.free()
	a.noteResolved(w, sum)
}

// noteResolved records w's new digest: envRev moves only when what w receives
// changed, so `workload list` can tell who runs an old value. Then the
// delivery hooks run. Called with a.mu held for writing.
func (a *Agent) noteResolved(w *workload, sum uint64) {
	changed := !w.hasDigest || w.digest != sum
	if changed {
		w.digest, w.hasDigest, w.envRev = sum, true, a.model.rev
	}
	var res []resolved
	if w.reg.Mount {
		m := a.getMerger()
		m.secrets = true
		m.run(a, w, false)
		res = make([]resolved, len(m.out))
		for i, e := range m.out {
			res[i] = resolved{name: e.Name, value: e.Value, secret: m.secret[i]}
		}
		a.putMerger(m)
	}
	a.afterResolve(w, res, changed)
}

// minShard is the fewest workloads worth a goroutine of their own.
const minShard = 256

// resolveTouched re-resolves the workloads a batch affected: their digests
// in parallel (GOMAXPROCS shards; the caller's write lock keeps the model
// still and every server out), then, one by one, envRev and the delivery
// hooks. Called with a.mu held for writing.
func (a *Agent) resolveTouched(t *touched) {
	a.prepareResolve()
	projects := t.projects
	if len(t.groups) > 0 {
		for name, p := range a.model.projects {
			for _, g := range p.meta.Groups {
				if t.groups[g] {
					projects[name] = true
				}
			}
		}
	}
	var ws []*workload
	for id, w := range a.workloads {
		if t.all || t.workloads[id] || t.users[w.reg.User] || projects[w.reg.Project] {
			ws = append(ws, w)
		}
	}
	sums := make([]uint64, len(ws))
	shards := min(runtime.GOMAXPROCS(0), len(ws)/minShard)
	if shards <= 1 {
		var d digester
		for i, w := range ws {
			sums[i] = d.digest(a, w)
		}
		d.free()
	} else {
		var wg sync.WaitGroup
		per := (len(ws) + shards - 1) / shards
		for lo := 0; lo < len(ws); lo += per {
			hi := min(lo+per, len(ws))
			wg.Go(func() {
				var d digester
				for i := lo; i < hi; i++ {
					sums[i] = d.digest(a, ws[i])
				}
				d.free()
			})
		}
		wg.Wait()
	}
	for i, w := range ws {
		a.noteResolved(w, sums[i])
	}
}
