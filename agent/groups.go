package agent

import (
	"context"
	"net/http"
	"slices"
	"sort"
	"strings"

	"github.com/envlet/envlet/agent/api"
	"github.com/envlet/envlet/fetch"
)

// Variable groups (docs/design.md §1, §2 layer 5): named bundles of variables at the
// organization level, written by admins only, assigned to projects in an
// order kept in each project's meta record (a later group wins). Members
// of a project see its groups' variables, masked values masked.

// groupMeta is the record under g/<group>/meta: the group exists. The
// projects it is assigned to live in each project's meta (its order);
// AllProjects (group assign G --all-projects) puts it in every project's,
// present and future, below the project's own groups.
type groupMeta struct {
	AllProjects bool `json:"all_projects,omitempty"`
}

// Groups for every project stand lowest of a project's groups: first
// in the order (so the project's own groups beat them), among themselves
// by name (a later name wins). A group that is also assigned to the
// project keeps its place in the project's own order.

// liveAllGroups lists the live groups for every project, sorted.
func (m *model) liveAllGroups() []string {
	var out []string
	for name, g := range m.groups {
		if g.metaRev != 0 && g.allProjects {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// eachGroup calls fn for each live group p's workloads draw from,
// highest first: the project's own order from its last, then the groups
// for every project not in it, from the last name. Called with a.mu held.
func (m *model) eachGroup(p *project, fn func(name string, g *group)) {
	for i := len(p.meta.Groups) - 1; i >= 0; i-- {
		if g := m.liveGroup(p.meta.Groups[i]); g != nil {
			fn(p.meta.Groups[i], g)
		}
	}
	for i := len(m.allGroups) - 1; i >= 0; i-- {
		if name := m.allGroups[i]; !contains(p.meta.Groups, name) {
			if g := m.liveGroup(name); g != nil {
				fn(name, g)
			}
		}
	}
}

// projectGroups is the live groups p's workloads draw from, in the order
// they apply: lowest first, the last wins. Called with a.mu held.
func (m *model) projectGroups(p *project) []string {
	var out []string
	m.eachGroup(p, func(name string, _ *group) { out = append(out, name) })
	slices.Reverse(out)
	return out
}

// liveGroup returns the group only if its meta record exists.
func (m *model) liveGroup(name string) *group {
	if g := m.groups[name]; g != nil && g.metaRev != 0 {
		return g
	}
	return nil
}

// groupProjects lists the live projects a group is assigned to, sorted.
func (m *model) groupProjects(name string) []string {
	out := []string{}
	for pn, p := range m.projects {
		if p.metaRev != 0 && contains(p.meta.Groups, name) {
			out = append(out, pn)
		}
	}
	sort.Strings(out)
	return out
}

func groupMissing(name string) error {
	if !validIdent(name) {
		return errorf(CodeGroupNotFound, "no such group")
	}
	return errorf(CodeGroupNotFound, "group %s does not exist", name)
}

func (a *Agent) createGroup(ctx context.Context, name string) error {
	if !validIdent(name) {
		return errorf(CodeInvalidRequest, "invalid group name (1-128 of A-Z a-z 0-9 . _ - @)")
	}
	_, err := a.commit(ctx, func(m *model) (fetch.Txn, error) {
		if m.liveGroup(name) != nil {
			return fetch.Txn{}, errorf(CodeGroupExists, "group %s already exists", name)
		}
		k := keyGroupMeta(name)
		return fetch.Txn{
			Conds: []fetch.Cond{{Key: k}},
			Ops:   []fetch.Op{{Key: k, Value: a.sealJSON(k, groupMeta{})}},
		}, nil
	})
	return err
}

// deleteGroup removes the group, its variables, and its place in every
// project's order, in one transaction.
func (a *Agent) deleteGroup(ctx context.Context, name string) error {
	_, err := a.commit(ctx, func(m *model) (fetch.Txn, error) {
		g := m.liveGroup(name)
		if g == nil {
			return fetch.Txn{}, groupMissing(name)
		}
		txn := fetch.Txn{
			Conds: []fetch.Cond{{Key: keyGroupMeta(name), ModRev: g.metaRev}},
			Ops:   []fetch.Op{{Key: keyGroupMeta(name), Delete: true}},
		}
		for n, v := range g.vars {
			k := keyGroupVar(name, n)
			txn.Conds = append(txn.Conds, fetch.Cond{Key: k, ModRev: v.rev})
			txn.Ops = append(txn.Ops, fetch.Op{Key: k, Delete: true})
		}
		for _, pn := range m.groupProjects(name) {
			p := m.projects[pn]
			meta := copyMeta(p.meta)
			meta.Groups = remove(meta.Groups, name)
			k := keyProjMeta(pn)
			txn.Conds = append(txn.Conds, fetch.Cond{Key: k, ModRev: p.metaRev})
			txn.Ops = append(txn.Ops, fetch.Op{Key: k, Value: a.sealJSON(k, meta)})
		}
		return txn, nil
	})
	return err
}

func copyMeta(m projectMeta) projectMeta {
	return projectMeta{
		Owners:  append([]string{}, m.Owners...),
		Members: append([]string{}, m.Members...),
		Groups:  append([]string{}, m.Groups...),
	}
}

func (a *Agent) putGroupVar(ctx context.Context, group, name string, value []byte, flags func(old byte) byte) error {
	if err := a.checkName(name); err != nil {
		return err
	}
	if err := a.checkNotProtected("group", name); err != nil {
		return err
	}
	if err := a.checkValue(name, value); err != nil {
		return err
	}
	key := keyGroupVar(group, name)
	_, err := a.commit(ctx, func(m *model) (fetch.Txn, error) {
		g := m.liveGroup(group)
		if g == nil {
			return fetch.Txn{}, groupMissing(group)
		}
		var rev fetch.Revision
		var old byte
		if v := g.vars[name]; v != nil {
			rev, old = v.rev, v.flags()
		}
		return fetch.Txn{
			Conds: []fetch.Cond{{Key: keyGroupMeta(group), ModRev: g.metaRev}, {Key: key, ModRev: rev}},
			Ops:   []fetch.Op{{Key: key, Value: a.sealVar(key, value, flags(old))}},
		}, nil
	})
	return err
}

func (a *Agent) deleteGroupVar(ctx context.Context, group, name string) error {
	key := keyGroupVar(group, name)
	_, err := a.commit(ctx, func(m *model) (fetch.Txn, error) {
		g := m.liveGroup(group)
		if g == nil {
			return fetch.Txn{}, groupMissing(group)
		}
		v := g.vars[name]
		if v == nil {
			return fetch.Txn{}, errorf(CodeNotFound, "group variable %s does not exist in %s", clipName(name), group)
		}
		return fetch.Txn{
			Conds: []fetch.Cond{{Key: key, ModRev: v.rev}},
			Ops:   []fetch.Op{{Key: key, Delete: true}},
		}, nil
	})
	return err
}

// assignGroup adds the group at the end of each project's order (a
// project that has it already keeps its place), or with unassign removes
// it (a project that does not have it is an error, and nothing changes).
func (a *Agent) assignGroup(ctx context.Context, group string, projects []string, unassign bool) error {
	if len(projects) == 0 {
		return errorf(CodeInvalidRequest, "no project given")
	}
	_, err := a.commit(ctx, func(m *model) (fetch.Txn, error) {
		g := m.liveGroup(group)
		if g == nil {
			return fetch.Txn{}, groupMissing(group)
		}
		txn := fetch.Txn{Conds: []fetch.Cond{{Key: keyGroupMeta(group), ModRev: g.metaRev}}}
		seen := map[string]bool{}
		for _, pn := range projects {
			if seen[pn] {
				continue
			}
			seen[pn] = true
			p := m.liveProject(pn)
			if p == nil {
				if !validIdent(pn) {
					return fetch.Txn{}, errorf(CodeProjectNotFound, "no such project")
				}
				return fetch.Txn{}, errorf(CodeProjectNotFound, "project %s does not exist", pn)
			}
			has := contains(p.meta.Groups, group)
			if has != unassign {
				if unassign {
					return fetch.Txn{}, errorf(CodeNotFoundGeneric, "group %s is not assigned to project %s", group, pn)
				}
				continue // already assigned: keeps its place
			}
			meta := copyMeta(p.meta)
			if unassign {
				meta.Groups = remove(meta.Groups, group)
			} else {
				meta.Groups = append(meta.Groups, group)
			}
			k := keyProjMeta(pn)
			txn.Conds = append(txn.Conds, fetch.Cond{Key: k, ModRev: p.metaRev})
			txn.Ops = append(txn.Ops, fetch.Op{Key: k, Value: a.sealJSON(k, meta)})
		}
		return txn, nil
	})
	return err
}

// assignAllProjects sets (or with unassign clears) the group's place in
// every project's order, present and future; unassigning a group that is
// not assigned to all projects is an error, and nothing changes.
func (a *Agent) assignAllProjects(ctx context.Context, group string, unassign bool) error {
	_, err := a.commit(ctx, func(m *model) (fetch.Txn, error) {
		g := m.liveGroup(group)
		if g == nil {
			return fetch.Txn{}, groupMissing(group)
		}
		if g.allProjects != unassign {
			if unassign {
				return fetch.Txn{}, errorf(CodeNotFoundGeneric, "group %s is not assigned to all projects", group)
			}
			return fetch.Txn{}, nil // already: nothing to write
		}
		k := keyGroupMeta(group)
		return fetch.Txn{
			Conds: []fetch.Cond{{Key: k, ModRev: g.metaRev}},
			Ops:   []fetch.Op{{Key: k, Value: a.sealJSON(k, groupMeta{AllProjects: !unassign})}},
		}, nil
	})
	return err
}

// setProjectGroups replaces a project's group order. Every group must
// exist; the transaction holds on their meta records, so one deleted
// meanwhile makes it retry and fail.
func (a *Agent) setProjectGroups(ctx context.Context, project string, groups []string) error {
	seen := map[string]bool{}
	for _, g := range groups {
		if seen[g] {
			return errorf(CodeInvalidRequest, "group %s is given twice", clipIdent(g))
		}
		seen[g] = true
	}
	_, err := a.commit(ctx, func(m *model) (fetch.Txn, error) {
		p := m.liveProject(project)
		if p == nil {
			return fetch.Txn{}, errorf(CodeProjectNotFound, "project %s does not exist", project)
		}
		k := keyProjMeta(project)
		txn := fetch.Txn{Conds: []fetch.Cond{{Key: k, ModRev: p.metaRev}}}
		for _, gn := range groups {
			g := m.liveGroup(gn)
			if g == nil {
				return fetch.Txn{}, groupMissing(gn)
			}
			txn.Conds = append(txn.Conds, fetch.Cond{Key: keyGroupMeta(gn), ModRev: g.metaRev})
		}
		meta := copyMeta(p.meta)
		meta.Groups = append([]string{}, groups...)
		txn.Ops = []fetch.Op{{Key: k, Value: a.sealJSON(k, meta)}}
		return txn, nil
	})
	return err
}

// groupVisible reports whether the caller may see the group: admins see
// every group, others the groups of projects they belong to. Called with
// a.mu held.
func (a *Agent) groupVisible(c *caller, name string) bool {
	if c.admin {
		return true
	}
	if g := a.model.liveGroup(name); g != nil && g.allProjects && len(a.memberProjects(c.user)) > 0 {
		return true // in every project's order, so in theirs
	}
	for _, pn := range a.model.groupProjects(name) {
		if a.model.projects[pn].isMember(c.user) {
			return true
		}
	}
	return false
}

// groupJSON is a group as the API shows it: its projects, and for show its
// variables (list gives their count).
type groupJSON struct {
	Name        string    `json:"name"`
	AllProjects bool      `json:"all_projects,omitempty"` // assigned to every project (Projects: those it is also assigned to by name)
	Projects    []string  `json:"projects"`
	Count       int       `json:"count"`
	Variables   []varJSON `json:"variables,omitempty"`
	api.Dated
}

// visibleProjects is what the caller may see of the projects a group is
// assigned to: an admin all of them, anyone else only their own (a group
// must not tell a member which other projects exist). Called with a.mu
// held.
func (a *Agent) visibleProjects(c *caller, group string) []string {
	all := a.model.groupProjects(group)
	if c.admin {
		return all
	}
	out := []string{}
	for _, pn := range all {
		if a.model.projects[pn].isMember(c.user) {
			out = append(out, pn)
		}
	}
	return out
}

func (a *Agent) apiListGroups(r *http.Request, c *caller) (any, int, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	out := []groupJSON{}
	for name, g := range a.model.groups {
		if g.metaRev != 0 && a.groupVisible(c, name) {
			out = append(out, groupJSON{Name: name, AllProjects: g.allProjects, Projects: a.visibleProjects(c, name), Count: len(g.vars), Dated: a.model.dates[keyGroupMeta(name)]})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, 200, nil
}

// groupFor finds the group named in the path for a reader: admins, and
// members of a project the group is assigned to. Others get
// PERMISSION_DENIED whether or not it exists. Called with a.mu held.
func (a *Agent) groupFor(r *http.Request, c *caller) (string, *group, error) {
	name := r.PathValue("g")
	g := a.model.liveGroup(name)
	if g == nil && c.admin {
		return "", nil, groupMissing(name)
	}
	if g == nil || !a.groupVisible(c, name) {
		return "", nil, errorf(CodeDenied, "%s may see only the groups of their projects", c.user)
	}
	return name, g, nil
}

func (a *Agent) apiGetGroup(r *http.Request, c *caller) (any, int, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	name, g, err := a.groupFor(r, c)
	if err != nil {
		return nil, 0, err
	}
	// Members see masked values masked even with reveal; admins may reveal.
	reveal := wantReveal(r) && c.admin
	vars := a.model.stampVars(showVars(r, g.vars, reveal), func(n string) string { return keyGroupVar(name, n) })
	if reveal {
		a.auditReveal(c, "group:"+name, maskedNames(vars))
	}
	return groupJSON{Name: name, AllProjects: g.allProjects, Projects: a.visibleProjects(c, name), Count: len(vars), Variables: vars, Dated: a.model.dates[keyGroupMeta(name)]}, 200, nil
}

func adminOnly(c *caller, what string) error {
	if !c.admin {
		return errorf(CodeDenied, "only admins %s", what)
	}
	return nil
}

func (a *Agent) apiCreateGroup(r *http.Request, c *caller) (any, int, error) {
	if err := adminOnly(c, "create groups"); err != nil {
		return nil, 0, err
	}
	var b struct {
		Name string `json:"name"`
	}
	if err := decodeBody(r, &b); err != nil {
		return nil, 0, err
	}
	if err := a.createGroup(r.Context(), b.Name); err != nil {
		return nil, 0, err
	}
	a.audit.write(auditRecord{Action: "create", Scope: "group:" + b.Name, Socket: "admin"}, &c.peer, c.user)
	a.mu.RLock()
	d := a.model.dates[keyGroupMeta(b.Name)]
	a.mu.RUnlock()
	return groupJSON{Name: b.Name, Projects: []string{}, Dated: d}, 201, nil
}

func (a *Agent) apiDeleteGroup(r *http.Request, c *caller) (any, int, error) {
	if err := adminOnly(c, "delete groups"); err != nil {
		return nil, 0, err
	}
	name := r.PathValue("g")
	if err := a.deleteGroup(r.Context(), name); err != nil {
		return nil, 0, err
	}
	a.audit.write(auditRecord{Action: "delete", Scope: "group:" + name, Socket: "admin"}, &c.peer, c.user)
	return nil, http.StatusNoContent, nil
}

func (a *Agent) apiPutGroupVar(r *http.Request, c *caller) (any, int, error) {
	if err := adminOnly(c, "change groups"); err != nil {
		return nil, 0, err
	}
	var b varBody
	if err := decodeBody(r, &b); err != nil {
		return nil, 0, err
	}
	if b.FromSecret != "" {
		return nil, 0, errorf(CodeInvalidRequest, "a group variable takes a value, not from_secret")
	}
	if b.Value == nil {
		return nil, 0, errorf(CodeInvalidRequest, "value is missing")
	}
	group, name := r.PathValue("g"), r.PathValue("name")
	value := b.Value.Bytes() // freed with the request
	if err := a.putGroupVar(r.Context(), group, name, value, b.flags); err != nil {
		return nil, 0, err
	}
	a.audit.write(auditRecord{Action: "set", Scope: "group:" + group, Name: name, HMAC: a.audit.sum(value), Socket: "admin"}, &c.peer, c.user)
	a.mu.RLock()
	defer a.mu.RUnlock()
	if g := a.model.liveGroup(group); g != nil && g.vars[name] != nil {
		v := showVar(r, name, g.vars[name], false)
		v.Dated = a.model.dates[keyGroupVar(group, name)]
		return v, 200, nil
	}
	return varJSON{Name: name}, 200, nil
}

func (a *Agent) apiDeleteGroupVar(r *http.Request, c *caller) (any, int, error) {
	if err := adminOnly(c, "change groups"); err != nil {
		return nil, 0, err
	}
	group, name := r.PathValue("g"), r.PathValue("name")
	if err := a.deleteGroupVar(r.Context(), group, name); err != nil {
		return nil, 0, err
	}
	a.audit.write(auditRecord{Action: "delete", Scope: "group:" + group, Name: name, Socket: "admin"}, &c.peer, c.user)
	return nil, http.StatusNoContent, nil
}

func (a *Agent) apiAssignGroup(unassign bool) handler {
	return func(r *http.Request, c *caller) (any, int, error) {
		if err := adminOnly(c, "assign groups"); err != nil {
			return nil, 0, err
		}
		var b api.GroupProjects
		if err := decodeBody(r, &b); err != nil {
			return nil, 0, err
		}
		group := r.PathValue("g")
		action := "assign"
		if unassign {
			action = "unassign"
		}
		switch {
		case b.AllProjects && len(b.Projects) > 0:
			return nil, 0, errorf(CodeInvalidRequest, "give projects or all_projects, not both")
		case b.AllProjects:
			if err := a.assignAllProjects(r.Context(), group, unassign); err != nil {
				return nil, 0, err
			}
			a.audit.write(auditRecord{Action: action, Scope: "group:" + group, Name: "(all projects)", Socket: "admin"}, &c.peer, c.user)
		default:
			if err := a.assignGroup(r.Context(), group, b.Projects, unassign); err != nil {
				return nil, 0, err
			}
			for _, p := range b.Projects {
				a.audit.write(auditRecord{Action: action, Scope: "group:" + group, Name: p, Socket: "admin"}, &c.peer, c.user)
			}
		}
		a.mu.RLock()
		defer a.mu.RUnlock()
		g := a.model.liveGroup(group)
		return groupJSON{Name: group, AllProjects: g != nil && g.allProjects, Projects: a.model.groupProjects(group), Count: len(a.model.groups[group].varsOrNil()), Dated: a.model.dates[keyGroupMeta(group)]}, 200, nil
	}
}

func (g *group) varsOrNil() varSet {
	if g == nil {
		return nil
	}
	return g.vars
}

func (a *Agent) apiSetProjectGroups(r *http.Request, c *caller) (any, int, error) {
	if err := adminOnly(c, "set a project's groups"); err != nil {
		return nil, 0, err
	}
	var b struct {
		Groups []string `json:"groups"`
	}
	if err := decodeBody(r, &b); err != nil {
		return nil, 0, err
	}
	project := r.PathValue("p")
	if err := a.setProjectGroups(r.Context(), project, b.Groups); err != nil {
		return nil, 0, err
	}
	a.audit.write(auditRecord{Action: "set-groups", Scope: "project:" + project, Name: strings.Join(b.Groups, ","), Socket: "admin"}, &c.peer, c.user)
	return a.projectReply(project, 200)
}
