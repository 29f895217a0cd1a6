package console

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/envlet/envlet/agent/api"
	"github.com/envlet/envlet/agent/api/client"
)

type projectRow struct {
	api.Project
	Role string // owner, member, or admin (an admin who is neither)
}

func role(who *api.Whoami, p *api.Project) string {
	switch {
	case slices.Contains(p.Owners, who.User):
		return "owner"
	case slices.Contains(p.Members, who.User):
		return "member"
	case who.Admin:
		return "admin"
	}
	return ""
}

func (s *Server) projectsPage(w http.ResponseWriter, r *http.Request) {
	who, err1 := s.whoami(r)
	var list []api.Project
	err2 := s.call(r, http.MethodGet, nil, nil, &list, "/v1/projects")
	rows := make([]projectRow, len(list))
	for i := range list {
		rows[i] = projectRow{Project: list[i], Role: role(who, &list[i])}
	}
	s.render(w, r, "projects", &view{Title: "Projects", Who: who, Error: firstErr(err1, err2), Data: rows})
}

// previewRow is one name of the "new job" preview: what explain says, and
// the per-run override typed for it.
type previewRow struct {
	api.Explained
	Override    string
	Overridden  bool
	MaskedInput bool // the override's name is one the agent masks
}

type projectData struct {
	Project  api.Project
	CanEdit  bool // owners and admins edit variables and members
	Vars     []api.Variable
	Revealed map[string]string
	Groups   []api.Group // in the order they apply, later wins
	Preview  []previewRow
	NewName  string
	NewValue string
	// Registration is the workloads.d / POST /v1/workloads document
	// that reproduces the preview (masked overrides left as placeholders).
	Registration string
	// RunLine is the `envlet run` command line that starts a program
	// with the preview's environment (the same placeholders).
	RunLine string
}

func (s *Server) projectPage(w http.ResponseWriter, r *http.Request) {
	s.showProject(w, r, nil, nil)
}

// showProject builds the project page; overrides (name → value) are the
// preview's per-run rows, revealed a value the user asked to see.
func (s *Server) showProject(w http.ResponseWriter, r *http.Request, revealed map[string]string, overrides map[string]string) {
	name := r.PathValue("p")
	who, err1 := s.whoami(r)
	d := &projectData{Revealed: revealed}
	err2 := s.call(r, http.MethodGet, nil, nil, &d.Project, "/v1/projects/%s", "project", name)
	if err2 != nil {
		s.render(w, r, "project", &view{Title: "Project " + name, Nav: "projects", Who: who, Error: errText(err2), Data: d})
		return
	}
	d.CanEdit = who.Admin || slices.Contains(d.Project.Owners, who.User)
	err3 := s.call(r, http.MethodGet, nil, nil, &d.Vars, "/v1/projects/%s/env", "project", name)
	var err4 error
	for _, g := range d.Project.Groups {
		var grp api.Group
		if err := s.call(r, http.MethodGet, nil, nil, &grp, "/v1/groups/%s", "group", g); err != nil {
			err4 = err
			grp = api.Group{Name: g}
		}
		d.Groups = append(d.Groups, grp)
	}
	var explained []api.Explained
	err5 := s.call(r, http.MethodGet, map[string][]string{"user": {"me"}, "project": {name}}, nil, &explained, "/v1/explain")
	d.Preview, d.Registration, d.RunLine = preview(who, name, explained, overrides)
	if o := overrides[""]; o != "" {
		d.NewName, d.NewValue = o, ""
	}
	s.render(w, r, "project", &view{Title: "Project " + name, Nav: "projects", Who: who,
		Error: firstErr(err1, err3, err4, err5), Data: d})
}

// preview lays the per-run overrides over what explain says the user's
// workload in project gets, and writes the registration and the `envlet
// run` line that do it.
func preview(who *api.Whoami, project string, explained []api.Explained, overrides map[string]string) ([]previewRow, string, string) {
	rows := make([]previewRow, 0, len(explained)+len(overrides))
	seen := map[string]bool{}
	for _, e := range explained {
		row := previewRow{Explained: e, MaskedInput: e.Masked}
		if e.LeftOut != "" {
			// Not served, so nothing to override: the name's winner (or
			// an added row) takes an override. It has no value to show.
			row.Value, row.Masked = "", false
			rows = append(rows, row)
			continue
		}
		if v, ok := overrides[e.Name]; ok {
			row.Override, row.Overridden = v, true
		}
		seen[e.Name] = true
		rows = append(rows, row)
	}
	for n, v := range overrides {
		if n != "" && !seen[n] {
			rows = append(rows, previewRow{Explained: api.Explained{Name: n, Layer: "runtime"},
				Override: v, Overridden: true, MaskedInput: maskedName(n)})
		}
	}
	// Stable: a name's left-out entries stay before its winner.
	slices.SortStableFunc(rows, func(a, b previewRow) int { return strings.Compare(a.Name, b.Name) })
	uid := who.UID
	reg := api.Registration{ID: project + "-job", User: who.User, Project: project, Match: api.Match{UID: &uid}}
	run := []string{"envlet", "run", "--project", project}
	for i := range rows {
		row := &rows[i]
		if !row.Overridden {
			continue
		}
		if reg.Runtime == nil {
			reg.Runtime = map[string]string{}
		}
		v := row.Override
		if row.MaskedInput {
			// Not shown on a page: the file gets it from whoever writes it.
			v = "<" + row.Name + ">"
		}
		reg.Runtime[row.Name] = v
		run = append(run, "-e", row.Name+"="+v)
		if row.Layer != "runtime" {
			row.Overrides = append([]string{row.Layer}, row.Overrides...)
		}
		row.Layer, row.Value, row.Masked, row.Cleared = "runtime", row.Override, row.MaskedInput, row.Override == ""
		row.SecretScope = ""
		if row.Masked {
			row.Value = api.MaskText
		}
	}
	// Not HTML-escaped here: the template escapes it for the page, and
	// the text must be what the user saves to a file.
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	enc.Encode(reg)
	run = append(run, "--", "CMD")
	for i, arg := range run {
		run[i] = shellQuote(arg)
	}
	return rows, b.String(), strings.Join(run, " ")
}

// shellQuote makes arg one word for a POSIX shell: as it is when it has
// only characters no shell treats specially, else in single quotes.
func shellQuote(arg string) string {
	if arg != "" && strings.Trim(arg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-") == "" {
		return arg
	}
	return "'" + strings.ReplaceAll(arg, "'", `'\''`) + "'"
}

// maskedName says whether the agent masks a name without the secret flag
// (docs/design.md: key, token, secret or password in the name).
func maskedName(name string) bool {
	n := strings.ToLower(name)
	for _, w := range []string{"key", "token", "secret", "password"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

func (s *Server) projectPreview(w http.ResponseWriter, r *http.Request) {
	overrides := map[string]string{}
	for k, v := range r.PostForm {
		if n, ok := strings.CutPrefix(k, "o."); ok && len(v) > 0 && r.PostFormValue("use."+n) != "" {
			overrides[n] = v[0]
		}
	}
	if n := strings.TrimSpace(r.PostFormValue("new_name")); n != "" {
		overrides[n] = r.PostFormValue("new_value")
	}
	s.showProject(w, r, nil, overrides)
}

func projectURL(p string) string { return "/projects/" + urlSegment(p) }

func urlSegment(s string) string {
	seg, err := client.Segment("", s)
	if err != nil {
		return "_"
	}
	return seg
}

func (s *Server) projectVarSave(w http.ResponseWriter, r *http.Request) {
	p := r.PathValue("p")
	name, body, keep, err := varWrite(r)
	row := name
	if r.PostFormValue("new") != "" {
		row = addRow
	}
	if err == nil && !keep {
		err = s.call(r, http.MethodPut, nil, body, nil, "/v1/projects/%s/env/%s", "project", p, "variable name", name)
	}
	s.done(w, r, projectURL(p)+"#variables", row, err, "Saved "+name+".")
}

func (s *Server) projectVarDelete(w http.ResponseWriter, r *http.Request) {
	p, name := r.PathValue("p"), r.PostFormValue("name")
	err := s.call(r, http.MethodDelete, nil, nil, nil, "/v1/projects/%s/env/%s", "project", p, "variable name", name)
	s.done(w, r, projectURL(p)+"#variables", name, err, "Deleted "+name+".")
}

func (s *Server) projectVarReveal(w http.ResponseWriter, r *http.Request) {
	p, name := r.PathValue("p"), r.PostFormValue("name")
	var vars []api.Variable
	err := s.call(r, http.MethodGet, reveal, nil, &vars, "/v1/projects/%s/env", "project", p)
	i := slices.IndexFunc(vars, func(v api.Variable) bool { return v.Name == name })
	if err == nil && (i < 0 || vars[i].Masked) {
		err = &api.Error{Code: api.CodeDenied, Message: "the agent did not reveal " + name}
	}
	if err != nil {
		s.revealFailed(w, r, projectURL(p)+"#variables", name, err)
		return
	}
	if wantsValue(r) {
		writeValue(w, vars[i].Value)
		return
	}
	s.showProject(w, r, map[string]string{name: vars[i].Value}, nil)
}

func (s *Server) memberAdd(w http.ResponseWriter, r *http.Request) {
	p := r.PathValue("p")
	user := strings.TrimSpace(r.PostFormValue("user"))
	err := s.call(r, http.MethodPost, nil, &api.MemberAdd{User: user, Owner: r.PostFormValue("owner") != ""}, nil,
		"/v1/projects/%s/members", "project", p)
	s.done(w, r, projectURL(p)+"#members", "member", err, "Added "+user+".")
}

func (s *Server) memberRemove(w http.ResponseWriter, r *http.Request) {
	p, user := r.PathValue("p"), r.PostFormValue("user")
	err := s.call(r, http.MethodDelete, nil, nil, nil, "/v1/projects/%s/members/%s", "project", p, "user", user)
	s.done(w, r, projectURL(p)+"#members", "member", err, "Removed "+user+".")
}

// --- Organization (admins)

type orgData struct {
	Groups   []api.Group
	Projects []api.Project
}

func (s *Server) orgPage(w http.ResponseWriter, r *http.Request) {
	who, err1 := s.whoami(r)
	d := &orgData{}
	var list []api.Group
	err2 := s.call(r, http.MethodGet, nil, nil, &list, "/v1/groups")
	var err3 error
	for _, g := range list {
		var full api.Group
		if err := s.call(r, http.MethodGet, nil, nil, &full, "/v1/groups/%s", "group", g.Name); err != nil {
			err3, full = err, g
		}
		d.Groups = append(d.Groups, full)
	}
	err4 := s.call(r, http.MethodGet, nil, nil, &d.Projects, "/v1/projects")
	s.render(w, r, "org", &view{Title: "Organization", Who: who, Error: firstErr(err1, err2, err3, err4), Data: d})
}

func (s *Server) groupCreate(w http.ResponseWriter, r *http.Request) {
	g := strings.TrimSpace(r.PostFormValue("group"))
	err := s.call(r, http.MethodPost, nil, &api.GroupCreate{Name: g}, nil, "/v1/groups")
	s.done(w, r, "/org", addRow, err, "Created group "+g+".")
}

func (s *Server) groupDelete(w http.ResponseWriter, r *http.Request) {
	g := r.PostFormValue("group")
	err := s.call(r, http.MethodDelete, nil, nil, nil, "/v1/groups/%s", "group", g)
	s.done(w, r, "/org", "group:"+g, err, "Deleted group "+g+".")
}

func (s *Server) groupVarSave(w http.ResponseWriter, r *http.Request) {
	g := r.PostFormValue("group")
	name, body, keep, err := varWrite(r)
	row := g + "/" + name
	if r.PostFormValue("new") != "" {
		row = g + "/" + addRow
	}
	if err == nil && !keep {
		err = s.call(r, http.MethodPut, nil, body, nil, "/v1/groups/%s/env/%s", "group", g, "variable name", name)
	}
	s.done(w, r, "/org#group-"+g, row, err, "Saved "+name+" in "+g+".")
}

func (s *Server) groupVarDelete(w http.ResponseWriter, r *http.Request) {
	g, name := r.PostFormValue("group"), r.PostFormValue("name")
	err := s.call(r, http.MethodDelete, nil, nil, nil, "/v1/groups/%s/env/%s", "group", g, "variable name", name)
	s.done(w, r, "/org#group-"+g, g+"/"+name, err, "Deleted "+name+" from "+g+".")
}

func (s *Server) groupAssign(w http.ResponseWriter, r *http.Request)   { s.assign(w, r, "assign") }
func (s *Server) groupUnassign(w http.ResponseWriter, r *http.Request) { s.assign(w, r, "unassign") }

func (s *Server) assign(w http.ResponseWriter, r *http.Request, verb string) {
	g, p := r.PostFormValue("group"), r.PostFormValue("project")
	err := s.call(r, http.MethodPost, nil, &api.GroupProjects{Projects: []string{p}}, nil, "/v1/groups/%s/"+verb, "group", g)
	s.done(w, r, "/org#group-"+g, "group:"+g, err, "Group "+g+": "+verb+"ed "+p+".")
}

// groupOrder moves a group one place in a project's order (later wins).
func (s *Server) groupOrder(w http.ResponseWriter, r *http.Request) {
	p, dir := r.PostFormValue("project"), r.PostFormValue("dir")
	i, _ := strconv.Atoi(r.PostFormValue("index"))
	var proj api.Project
	err := s.call(r, http.MethodGet, nil, nil, &proj, "/v1/projects/%s", "project", p)
	if err == nil {
		order, ok := moved(proj.Groups, i, dir)
		if !ok {
			err = &api.Error{Code: api.CodeInvalidRequest, Message: "that group cannot move " + dir}
		} else {
			err = s.call(r, http.MethodPut, nil, &api.ProjectGroups{Groups: order}, nil, "/v1/projects/%s/groups", "project", p)
		}
	}
	s.done(w, r, "/org#order", "order:"+p, err, "Reordered the groups of "+p+".")
}
