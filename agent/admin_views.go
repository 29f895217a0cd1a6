package agent

import (
	"net/http"
	"sort"

	"github.com/envlet/envlet/agent/api"
)

// Whole views (issue 12 §4): what a user can read across the places it is
// kept, in one request.

// apiListAllSecrets is GET /v1/secrets: the caller's private secrets and
// those of every project they are a member or owner of; ?project=P only
// P's (a member's, owner's or admin's). An admin reaches other users'
// secrets and projects they are not in through the per-owner endpoints.
func (a *Agent) apiListAllSecrets(r *http.Request, c *caller) (any, int, error) {
	only := r.URL.Query().Get("project")
	if r.URL.Query().Has("project") {
		r.SetPathValue("p", only)
		if _, err := a.projectFor(r, c, "member"); err != nil {
			return nil, 0, err
		}
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	out := []api.SecretListed{}
	add := func(set varSet, visibility, project string) {
		scope := secretScope{user: c.user, project: project}
		for _, n := range set.sortedNames() {
			s := showSecret(r, n, set[n], false, false)
			out = append(out, api.SecretListed{Name: n, Kind: s.Kind, Size: s.Size, Visibility: visibility, Project: project, Dated: a.model.dates[scope.key(n)]})
		}
	}
	if only != "" {
		add(a.model.projSecrets[only], api.VisibilityProject, only)
		return out, 200, nil
	}
	add(a.model.userSecrets[c.user], api.VisibilityPrivate, "")
	for _, pn := range a.memberProjects(c.user) {
		add(a.model.projSecrets[pn], api.VisibilityProject, pn)
	}
	return out, 200, nil
}

// memberProjects lists the live projects user is a member or owner of,
// sorted. Called with a.mu held.
func (a *Agent) memberProjects(user string) []string {
	var out []string
	for pn, p := range a.model.projects {
		if p.metaRev != 0 && p.isMember(user) {
			out = append(out, pn)
		}
	}
	sort.Strings(out)
	return out
}

// wantGroups reports whether a project env listing asks for the whole
// view: ?groups=1.
func wantGroups(r *http.Request) bool {
	v := r.URL.Query().Get("groups")
	return v == "1" || v == "true"
}

// withGroupVars is a project's whole view: own, the project's variables
// (source project), then those its groups give, highest first (the
// group that wins comes first), each group's by name, source group:NAME.
// Group values are masked as `group show` masks them: admins alone may
// reveal. Called with a.mu held.
func (a *Agent) withGroupVars(r *http.Request, c *caller, p *project, own []varJSON) []varJSON {
	for i := range own {
		own[i].Source = layerProject
	}
	reveal := wantReveal(r) && c.admin
	groups := a.model.projectGroups(p)
	for i := len(groups) - 1; i >= 0; i-- {
		vars := showVars(r, a.model.groups[groups[i]].vars, reveal)
		if reveal {
			a.auditReveal(c, layerGroup+groups[i], maskedNames(vars))
		}
		for j := range vars {
			vars[j].Source = layerGroup + groups[i]
		}
		own = append(own, vars...)
	}
	return own
}

// apiLeaveProject is DELETE /v1/projects/{p}/members/me (project leave):
// a member or owner removes themselves; an owner only while another
// owner remains. Their account variables and private secrets stay theirs
// (they just stop reaching the project's workloads).
func (a *Agent) apiLeaveProject(r *http.Request, c *caller) (any, int, error) {
	name, err := a.projectFor(r, c, "member")
	if err != nil {
		return nil, 0, err
	}
	err = a.updateProject(r.Context(), name, func(m *projectMeta) error {
		switch {
		case !contains(m.Owners, c.user) && !contains(m.Members, c.user):
			return errorf(CodeNotFoundGeneric, "%s is not a member of project %s", clipIdent(c.user), name)
		case contains(m.Owners, c.user) && len(m.Owners) == 1:
			return errorf(CodeLastOwner, "%s is the only owner of project %s: add another owner before leaving", clipIdent(c.user), name)
		}
		m.Owners, m.Members = remove(m.Owners, c.user), remove(m.Members, c.user)
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	a.audit.write(auditRecord{Action: "leave", Scope: "project:" + name, Name: c.user, Socket: "admin"}, &c.peer, c.user)
	return nil, http.StatusNoContent, nil
}

// checkExecution applies the variable rules to a tentative execution
// layer (envlet run, explain's preview), the first bad name in name order
// so the answer is the same every time.
func (a *Agent) checkExecution(execution map[string]string) error {
	names := make([]string, 0, len(execution))
	for n := range execution {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := a.checkName(n); err != nil {
			return err
		}
		if err := a.checkValue(n, []byte(execution[n])); err != nil {
			return err
		}
	}
	return nil
}

// apiExplainPreview is POST /v1/explain (explain --project P -e …): what
// a new workload of the caller (an admin: of any user) in P would start
// with, the tentative overrides its execution layer, before anything is
// registered. The caller must be a member of P, as for envlet run.
func (a *Agent) apiExplainPreview(r *http.Request, c *caller) (any, int, error) {
	var req api.ExplainPreview
	if err := decodeBody(r, &req); err != nil {
		return nil, 0, err
	}
	// The overrides' values: wiped once the reply holds its copies.
	defer func() {
		for _, s := range valueStrings(&req) {
			wipeString(s)
		}
	}()
	user := req.User
	if user == "" || user == "me" {
		user = c.user
	}
	if !validIdent(user) || !validIdent(req.Project) {
		return nil, 0, errorf(CodeInvalidRequest, "a preview needs a valid project (--project P) and user")
	}
	if user != c.user && !c.admin {
		return nil, 0, errorf(CodeDenied, "%s may explain only their own workloads", c.user)
	}
	if err := a.checkExecution(req.Execution); err != nil {
		return nil, 0, err
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	p := a.model.liveProject(req.Project)
	switch {
	case p == nil && c.admin:
		return nil, 0, errorf(CodeProjectNotFound, "project %s does not exist", req.Project)
	case p == nil || !c.admin && !p.isMember(c.user):
		// As everywhere: a missing project is refused as one the caller
		// is not in.
		return nil, 0, errorf(CodeDenied, "%s may explain only projects they are a member of", c.user)
	}
	exe := layer{name: layerExecution}
	for n, v := range req.Execution {
		exe.vars = append(exe.vars, layerVar{name: n, value: []byte(v)})
	}
	layers := append([]layer{exe}, a.layersFor(user, req.Project, nil)...)
	defer func() {
		for _, v := range exe.vars {
			clear(v.value)
		}
	}()
	return a.explain(r, c, user, p, layers, "user:"+user+",project:"+req.Project+",preview"), 200, nil
}
