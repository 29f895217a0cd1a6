package agent

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/envlet/envlet/agent/api"
	"github.com/envlet/envlet/cache"
	"github.com/envlet/envlet/fetch"
)

// The model is the agent's decoded view of the store: names in the Go heap,
// every value in locked memory (cache.Buf). It changes only through apply,
// called with Agent.mu held for writing.

// variable is one stored variable. val holds the record's plaintext: one
// flags byte, then the value.
type variable struct {
	val *cache.Buf
	rev fetch.Revision
}

const (
	flagSecret  = 1 << 0
	flagFromRef = 1 << 1 // the value names a secret (resolved per workload)
	flagFile    = 1 << 2 // a secret whose value is the base64 of a file's bytes
)

func (v *variable) value() []byte { return v.val.Bytes()[1:] }
func (v *variable) flags() byte   { return v.val.Bytes()[0] }
func (v *variable) secret() bool  { return v.flags()&flagSecret != 0 }
func (v *variable) fromRef() bool { return v.flags()&flagFromRef != 0 }
func (v *variable) file() bool    { return v.flags()&flagFile != 0 }

type varSet map[string]*variable

func (s varSet) sortedNames() []string {
	names := make([]string, 0, len(s))
	for n := range s {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// sortedVar is one variable of a stored set as resolution walks it.
type sortedVar struct {
	name      string
	v         *variable
	reserved  bool // only the platform layer may set a reserved name
	protected bool // the project and group layers may not set it (protect.go)
}

// varView is a varSet's variables sorted by name, so resolution merges
// layers without a map or a sort per workload. apply marks it stale and
// the resolution that ends every write-locked change rebuilds it
// (model.refreshViews); a stale view is never read for resolution (the
// merge sorts a copy instead).
type varView struct {
	list   []sortedVar
	ok     bool
	queued bool // in model.stale
}

// staleView is a view to rebuild and the set it shows.
type staleView struct {
	view *varView
	set  *varSet
}

func (v *varView) build(set varSet, reserved, protected Reserved) {
	clear(v.list)
	v.list = sortVars(v.list[:0], set, reserved, protected)
	v.ok, v.queued = true, false
}

// sortVars appends set's variables to dst in name order.
func sortVars(dst []sortedVar, set varSet, reserved, protected Reserved) []sortedVar {
	for n, x := range set {
		dst = append(dst, sortedVar{n, x, reserved.Has(n), protected.Has(n)})
	}
	sort.Slice(dst, func(i, j int) bool { return dst[i].name < dst[j].name })
	return dst
}

type userState struct {
	vars   varSet
	view   varView
	idxRev fetch.Revision
}

// projectMeta is the record under p/<project>/meta.
type projectMeta struct {
	Owners  []string `json:"owners"`
	Members []string `json:"members"`
	Groups  []string `json:"groups"`
}

type project struct {
	meta    projectMeta
	metaRev fetch.Revision
	vars    varSet
	view    varView
}

func (p *project) isMember(user string) bool {
	return contains(p.meta.Members, user) || contains(p.meta.Owners, user)
}

type group struct {
	metaRev     fetch.Revision
	allProjects bool // applies to every project, below the project's own groups (groups.go)
	vars        varSet
	view        varView
}

type model struct {
	rev       fetch.Revision
	users     map[string]*userState
	projects  map[string]*project
	groups    map[string]*group
	allGroups []string                  // live groups for every project, sorted: lowest first (groups.go)
	workloads map[string]fetch.Revision // ids of API registrations (the workload itself lives in Agent.workloads)

	// Secrets, by owner: a user's private ones and a project's shared ones.
	// A secret is stored like a variable: flags (flagFile), then the value.
	userSecrets map[string]varSet
	projSecrets map[string]varSet

	dates map[string]api.Dated // by record key: the d/ records (dated.go)

	stale []staleView // views apply changed, rebuilt by refreshViews
}

// markStale records that set changed, so its view is rebuilt.
func (m *model) markStale(v *varView, set *varSet) {
	v.ok = false
	if !v.queued {
		v.queued = true
		m.stale = append(m.stale, staleView{v, set})
	}
}

// refreshViews rebuilds the views apply made stale. Called with Agent.mu
// held for writing, before anything is resolved.
func (m *model) refreshViews(reserved, protected Reserved) {
	for _, s := range m.stale {
		s.view.build(*s.set, reserved, protected)
	}
	clear(m.stale)
	m.stale = m.stale[:0]
}

func newModel() *model {
	return &model{
		users:       map[string]*userState{},
		projects:    map[string]*project{},
		groups:      map[string]*group{},
		workloads:   map[string]fetch.Revision{},
		userSecrets: map[string]varSet{},
		projSecrets: map[string]varSet{},
		dates:       map[string]api.Dated{},
	}
}

// Record keys; see docs/internals.md.
func keyAcctVar(user, name string) string    { return "u/" + user + "/v/" + name }
func keyAcctIdx(user string) string          { return "u/" + user + "/idx" }
func keyProjMeta(p string) string            { return "p/" + p + "/meta" }
func keyProjVar(p, name string) string       { return "p/" + p + "/v/" + name }
func keyGroupMeta(g string) string           { return "g/" + g + "/meta" }
func keyGroupVar(g, name string) string      { return "g/" + g + "/v/" + name }
func keyWorkload(id string) string           { return "w/" + id }
func keyUserSecret(user, name string) string { return "s/u/" + user + "/" + name }
func keyProjSecret(p, name string) string    { return "s/p/" + p + "/" + name }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// touched collects what a batch of events changed, so only the affected
// workloads are resolved again.
type touched struct {
	all       bool
	users     map[string]bool
	projects  map[string]bool
	groups    map[string]bool
	workloads map[string]bool
}

func newTouched() *touched {
	return &touched{users: map[string]bool{}, projects: map[string]bool{}, groups: map[string]bool{}, workloads: map[string]bool{}}
}

// openVar decrypts a sealed variable record straight into locked memory.
func (a *Agent) openVar(key string, sealed []byte) (*variable, error) {
	n, err := fetch.PlaintextLen(sealed)
	if err != nil || n < 1 {
		return nil, fmt.Errorf("open %s: record too short", key)
	}
	buf := a.pool.Alloc(n)
	p, err := a.keys.Open(buf.Bytes()[:0], sealed, key)
	if err != nil || len(p) != n {
		buf.Free()
		return nil, fmt.Errorf("open %s: %w", key, err)
	}
	return &variable{val: buf}, nil
}

// openMeta decrypts a JSON record (metadata: no values) into v.
func (a *Agent) openMeta(key string, sealed []byte, v any) error {
	p, err := a.keys.Open(nil, sealed, key)
	if err != nil {
		return fmt.Errorf("open %s: %w", key, err)
	}
	if err := json.Unmarshal(p, v); err != nil {
		return fmt.Errorf("decode %s: %w", key, err)
	}
	return nil
}

// apply folds one event into the model. A record that does not open is
// logged by key and skipped: one bad record must not stop the agent serving
// every other workload.
func (a *Agent) apply(ev fetch.Event, t *touched) {
	if strings.HasPrefix(ev.Key, "d/") {
		a.applyDated(ev) // dated.go
		return
	}
	m := a.model
	parts := strings.Split(ev.Key, "/")
	bad := func(err error) {
		a.log.Error("skipping a record that does not open", "key", ev.Key, "error", err)
	}
	setVar := func(set varSet) varSet {
		name := parts[len(parts)-1]
		if old := set[name]; old != nil {
			old.val.Free()
			delete(set, name)
		}
		if ev.Deleted {
			return set
		}
		v, err := a.openVar(ev.Key, ev.Value)
		if err != nil {
			bad(err)
			return set
		}
		v.rev = ev.ModRev
		if set == nil {
			set = varSet{}
		}
		set[name] = v
		return set
	}
	switch {
	case len(parts) == 4 && parts[0] == "u" && parts[2] == "v":
		u := m.user(parts[1])
		u.vars = setVar(u.vars)
		m.markStale(&u.view, &u.vars)
		m.dropUserIfEmpty(parts[1])
		t.users[parts[1]] = true
	case len(parts) == 3 && parts[0] == "u" && parts[2] == "idx":
		u := m.user(parts[1])
		u.idxRev = ev.ModRev
		if ev.Deleted {
			u.idxRev = 0
		}
		m.dropUserIfEmpty(parts[1])
	case len(parts) == 3 && parts[0] == "p" && parts[2] == "meta":
		name := parts[1]
		t.projects[name] = true
		if ev.Deleted {
			if p := m.projects[name]; p != nil {
				p.metaRev = 0
				p.meta = projectMeta{}
				m.dropProjectIfEmpty(name)
			}
			return
		}
		var meta projectMeta
		if err := a.openMeta(ev.Key, ev.Value, &meta); err != nil {
			bad(err)
			return
		}
		p := m.project(name)
		p.meta, p.metaRev = meta, ev.ModRev
	case len(parts) == 4 && parts[0] == "p" && parts[2] == "v":
		p := m.project(parts[1])
		p.vars = setVar(p.vars)
		m.markStale(&p.view, &p.vars)
		m.dropProjectIfEmpty(parts[1])
		t.projects[parts[1]] = true
	case len(parts) == 3 && parts[0] == "g" && parts[2] == "meta":
		var meta groupMeta
		if !ev.Deleted {
			if err := a.openMeta(ev.Key, ev.Value, &meta); err != nil {
				bad(err)
				return
			}
		}
		g := m.group(parts[1])
		was := g.allProjects && g.metaRev != 0
		g.metaRev, g.allProjects = ev.ModRev, meta.AllProjects
		if ev.Deleted {
			g.metaRev, g.allProjects = 0, false
		}
		if was || g.allProjects {
			// It was or is in every project's order.
			m.allGroups = m.liveAllGroups()
			t.all = true
		}
		m.dropGroupIfEmpty(parts[1])
		t.groups[parts[1]] = true
	case len(parts) == 4 && parts[0] == "g" && parts[2] == "v":
		g := m.group(parts[1])
		g.vars = setVar(g.vars)
		m.markStale(&g.view, &g.vars)
		if g.allProjects && g.metaRev != 0 {
			t.all = true // every project draws from it
		}
		m.dropGroupIfEmpty(parts[1])
		t.groups[parts[1]] = true
	case len(parts) == 4 && parts[0] == "s" && (parts[1] == "u" || parts[1] == "p"):
		// A secret: workloads of its user, or of its project, may take
		// a variable from it.
		owners := m.userSecrets
		if parts[1] == "p" {
			owners = m.projSecrets
			t.projects[parts[2]] = true
		} else {
			t.users[parts[2]] = true
		}
		if set := setVar(owners[parts[2]]); len(set) > 0 {
			owners[parts[2]] = set
		} else {
			delete(owners, parts[2])
		}
	case len(parts) == 2 && parts[0] == "w":
		id := parts[1]
		t.workloads[id] = true
		if ev.Deleted {
			delete(m.workloads, id)
			a.removeWorkload(id, sourceAPI)
			return
		}
		p, err := a.keys.Open(nil, ev.Value, ev.Key)
		if err != nil {
			bad(err)
			return
		}
		reg, err := parseRegistration(p)
		clear(p)
		if err != nil {
			bad(err)
			return
		}
		m.workloads[id] = ev.ModRev
		if err := a.putWorkload(reg, sourceAPI); err != nil {
			a.log.Error("api registration refused", "workload", id, "error", err)
		}
	default:
		a.log.Warn("ignoring an unknown record", "key", ev.Key)
	}
}

func (m *model) user(name string) *userState {
	u := m.users[name]
	if u == nil {
		u = &userState{}
		m.users[name] = u
	}
	return u
}

func (m *model) dropUserIfEmpty(name string) {
	if u := m.users[name]; u != nil && len(u.vars) == 0 && u.idxRev == 0 {
		delete(m.users, name)
	}
}

func (m *model) project(name string) *project {
	p := m.projects[name]
	if p == nil {
		p = &project{}
		m.projects[name] = p
	}
	return p
}

// liveProject returns the project only if its meta record exists.
func (m *model) liveProject(name string) *project {
	if p := m.projects[name]; p != nil && p.metaRev != 0 {
		return p
	}
	return nil
}

func (m *model) dropProjectIfEmpty(name string) {
	if p := m.projects[name]; p != nil && len(p.vars) == 0 && p.metaRev == 0 {
		delete(m.projects, name)
	}
}

func (m *model) group(name string) *group {
	g := m.groups[name]
	if g == nil {
		g = &group{}
		m.groups[name] = g
	}
	return g
}

func (m *model) dropGroupIfEmpty(name string) {
	if g := m.groups[name]; g != nil && len(g.vars) == 0 && g.metaRev == 0 {
		delete(m.groups, name)
	}
}

// free zeroes every value the model holds.
func (m *model) free() {
	for _, u := range m.users {
		u.vars.free()
	}
	for _, p := range m.projects {
		p.vars.free()
	}
	for _, g := range m.groups {
		g.vars.free()
	}
	for _, s := range m.userSecrets {
		s.free()
	}
	for _, s := range m.projSecrets {
		s.free()
	}
}

func (s varSet) free() {
	for n, v := range s {
		v.val.Free()
		delete(s, n)
	}
}
