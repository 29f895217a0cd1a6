package agent

import (
	"bytes"
	"sort"

	"github.com/envlet/envlet/agent/wire"
	"github.com/envlet/envlet/cache"
)

// Layer names as explain reports them (DESIGN §2).
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
}

type layer struct {
	name    string
	vars    []layerVar
	missing []string // variables from a secret that this workload cannot find (names only)
}

// resolved is the winner for one name.
type resolved struct {
	name      string
	value     []byte // empty: the name is cleared
	secret    bool
	layer     string
	overrides []string
}

// layersFor gathers the layers for user in project, highest first
// (DESIGN §2). w may be nil (explain for a user/project pair). Called with
// a.mu held.
func (a *Agent) layersFor(user, projectName string, w *workload) []layer {
	var ls []layer
	own := func(name string, vars []ownVar) {
		l := layer{name: name}
		for _, v := range vars {
			l.vars = append(l.vars, layerVar{v.name, v.val.Bytes(), false})
		}
		ls = append(ls, l)
	}
	stored := func(name string, set varSet) {
		ls = append(ls, a.storedLayer(name, set, user, projectName))
	}
	if w != nil {
		own(layerExecution, w.execution)
		own(layerRuntime, w.runtime)
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
		for i := len(p.meta.Groups) - 1; i >= 0; i-- {
			if g := a.model.groups[p.meta.Groups[i]]; g != nil && g.metaRev != 0 {
				stored(layerGroup+p.meta.Groups[i], g.vars)
			}
		}
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
			out = append(out, resolved{name: v.name, value: v.value, secret: v.secret, layer: l.name})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// resolveWorkload computes w's environment and encodes it as the Env frame
// it is served as, in locked memory. envRev moves only when the content
// changes, so `workload list` can tell who runs an old value. Called with
// a.mu held for writing.
func (a *Agent) resolveWorkload(w *workload) {
	layers := a.layersFor(w.reg.User, w.reg.Project, w)
	for _, l := range layers {
		for _, name := range l.missing {
			a.log.Warn("leaving out a variable whose secret this workload cannot read", "workload", w.reg.ID, "layer", l.name, "name", name)
		}
	}
	res := a.resolve(layers, func(l, name string) {
		a.log.Warn("ignoring a reserved name outside the platform layer", "workload", w.reg.ID, "layer", l, "name", name)
	})
	entries := make([]wire.Entry, len(res))
	for i, r := range res {
		entries[i] = wire.Entry{Name: r.name, Value: r.value, Unset: len(r.value) == 0}
	}
	frame := a.pool.Alloc(wire.EnvSize(entries))
	wire.AppendEnv(frame.Bytes()[:0], uint64(a.model.rev), entries)
	changed := w.frame == nil || !bytes.Equal(envBody(w.frame.Bytes()), envBody(frame.Bytes()))
	if changed {
		w.envRev = a.model.rev
	}
	w.frame.Free()
	w.frame = frame
	a.afterResolve(w, res, changed)
}

// envFrame returns w's environment encoded as the Env frame it is served
// as, in a new locked Buf the caller frees; it stays valid after a.mu is
// released. Called with a.mu held (read or write).
func (a *Agent) envFrame(w *workload) *cache.Buf {
	return a.pool.Copy(w.frame.Bytes())
}

// envBody is an Env frame less its header and revision: what a workload
// actually receives as its environment.
func envBody(frame []byte) []byte {
	const skip = 12 + 8 // frame header, revision
	if len(frame) < skip {
		return nil
	}
	return frame[skip:]
}

// resolveTouched re-resolves the workloads a batch affected. Called with
// a.mu held for writing.
func (a *Agent) resolveTouched(t *touched) {
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
	for id, w := range a.workloads {
		if t.all || t.workloads[id] || t.users[w.reg.User] || projects[w.reg.Project] {
			a.resolveWorkload(w)
		}
	}
}
