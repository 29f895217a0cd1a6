package agent

import (
	"net/http"
	"strconv"
	"time"

	"github.com/envlet/envlet/agent/api"
	"github.com/envlet/envlet/agent/internal/auditquery"
)

// Who an audit record of a workload names: its user, its project and the
// groups merged into what it was served, so the log answers "which
// projects access which variable groups" without a join.

// servedTo is what a record of w names.
type servedTo struct {
	user, project string
	groups        []string
}

// servedTo returns what a record about w names: the groups are the
// project's live groups in order (later wins), those the merge drew from.
// Called with a.mu held.
func (a *Agent) servedTo(w *workload) servedTo {
	to := servedTo{user: w.reg.User, project: w.reg.Project}
	if p := a.model.liveProject(w.reg.Project); p != nil {
		to.groups = a.model.projectGroups(p) // groups for every project too (groups.go)
	}
	return to
}

// record fills r's workload fields.
func (to servedTo) record(r auditRecord) auditRecord {
	r.WorkloadUser, r.Project, r.Groups = to.user, to.project, to.groups
	return r
}

// workloadNamed returns what a record about workload id names; zero when
// it is not registered.
func (a *Agent) workloadNamed(id string) servedTo {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if w := a.workloads[id]; w != nil {
		return servedTo{user: w.reg.User, project: w.reg.Project}
	}
	return servedTo{}
}

// apiAuditList answers GET /v1/audit: the audit log's records that match
// the query, read from the log and its rotated files (auditquery).
// Admins read every record; a project owner the records of projects they
// own, without HMACs; everyone else is refused.
func (a *Agent) apiAuditList(r *http.Request, c *caller) (any, int, error) {
	q := r.URL.Query()
	var f auditquery.Filter
	var err error
	if f.Since, err = auditTime(q.Get("since")); err != nil {
		return nil, 0, err
	}
	if f.Until, err = auditTime(q.Get("until")); err != nil {
		return nil, 0, err
	}
	f.User, f.Project, f.Group, f.Action = q.Get("user"), q.Get("project"), q.Get("group"), q.Get("action")
	for _, s := range []string{f.User, f.Project, f.Group} {
		if s != "" && !validIdent(s) {
			return nil, 0, errorf(CodeInvalidRequest, "user, project and group must be valid names")
		}
	}
	if f.Action != "" && !validIdent(f.Action) {
		return nil, 0, errorf(CodeInvalidRequest, "action must be a valid name (serve, set, run, …)")
	}
	limit := 1000
	if s := q.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > 100000 {
			return nil, 0, errorf(CodeInvalidRequest, "limit must be a whole number from 1 to 100000")
		}
	}
	if !c.admin {
		// A project owner reads their own projects' records: with no
		// project asked for, all of them; else only one they own.
		owned := a.ownedProjects(c.user)
		switch {
		case f.Project != "" && !contains(owned, f.Project):
			return nil, 0, errorf(CodeDenied, "%s may read the audit records only of projects they own", c.user)
		case len(owned) == 0:
			return nil, 0, errorf(CodeDenied, "only admins and project owners read the audit log")
		case f.Project == "":
			f.Projects = owned
		}
	}
	if a.cfg.AuditLog == "" {
		return nil, 0, errorf(CodeNotFoundGeneric, "the agent writes no audit log file (audit_log is empty)")
	}
	res, err := auditquery.Query(a.cfg.AuditLog, f, limit)
	if err != nil {
		return nil, 0, err
	}
	out := api.AuditList{Records: res.Records, Truncated: res.Truncated, Files: res.Files}
	if out.Records == nil {
		out.Records = []api.AuditRecord{}
	}
	if !c.admin {
		for i := range out.Records {
			out.Records[i].HMAC, out.Records[i].HMACs = "", nil
		}
	}
	return out, 200, nil
}

// auditTime reads a time bound: RFC 3339, or a duration back from now
// (24h, 90m).
func auditTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return time.Now().Add(-d), nil
	}
	return time.Time{}, errorf(CodeInvalidRequest, "a time bound must be RFC 3339 (2026-01-02T15:04:05Z) or a duration back from now (24h)")
}

// ownedProjects lists the live projects user owns.
func (a *Agent) ownedProjects(user string) []string {
	a.mu.RLock()
	defer a.mu.RUnlock()
	var out []string
	for name, p := range a.model.projects {
		if p.metaRev != 0 && contains(p.meta.Owners, user) {
			out = append(out, name)
		}
	}
	return out
}
