package console

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/envlet/envlet/agent/api"
	"github.com/envlet/envlet/agent/api/client"
)

func (s *Server) routes() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/env", http.StatusSeeOther)
	})
	m.HandleFunc("POST /logout", s.logout)

	m.HandleFunc("GET /env", s.envPage)
	m.HandleFunc("POST /env/save", s.envSave)
	m.HandleFunc("POST /env/delete", s.envDelete)
	m.HandleFunc("POST /env/reveal", s.envReveal)

	m.HandleFunc("GET /secrets", s.secretsPage)
	m.HandleFunc("POST /secrets/create", s.secretCreate)
	m.HandleFunc("POST /secrets/read", s.secretRead)
	m.HandleFunc("POST /secrets/delete", s.secretDelete)

	m.HandleFunc("GET /projects", s.projectsPage)
	m.HandleFunc("GET /projects/{p}", s.projectPage)
	m.HandleFunc("POST /projects/{p}/save", s.projectVarSave)
	m.HandleFunc("POST /projects/{p}/delete", s.projectVarDelete)
	m.HandleFunc("POST /projects/{p}/reveal", s.projectVarReveal)
	m.HandleFunc("POST /projects/{p}/members/add", s.memberAdd)
	m.HandleFunc("POST /projects/{p}/members/remove", s.memberRemove)
	m.HandleFunc("POST /projects/{p}/preview", s.projectPreview)

	m.HandleFunc("GET /org", s.orgPage)
	m.HandleFunc("POST /org/create", s.groupCreate)
	m.HandleFunc("POST /org/delete", s.groupDelete)
	m.HandleFunc("POST /org/save", s.groupVarSave)
	m.HandleFunc("POST /org/unset", s.groupVarDelete)
	m.HandleFunc("POST /org/assign", s.groupAssign)
	m.HandleFunc("POST /org/unassign", s.groupUnassign)
	m.HandleFunc("POST /org/order", s.groupOrder)

	m.HandleFunc("GET /workloads", s.workloadsPage)
	m.HandleFunc("GET /audit", s.auditPage)
	m.HandleFunc("POST /audit/hmac", s.auditHMAC)
	return m
}

// call is one admin API call on behalf of the request. path is a format
// whose %s are filled with escaped segments (client.Path).
func (s *Server) call(r *http.Request, method string, query url.Values, in, out any, format string, parts ...string) error {
	path, err := client.Path(format, parts...)
	if err != nil {
		return err
	}
	_, err = s.agent.Call(r.Context(), method, path, query, in, out)
	return err
}

var reveal = url.Values{"reveal": {"1"}}

func (s *Server) whoami(r *http.Request) (*api.Whoami, error) {
	var w api.Whoami
	return &w, s.call(r, http.MethodGet, nil, nil, &w, "/v1/whoami")
}

// firstErr keeps the first error of a page's calls: the page still shows
// what it could read.
func firstErr(errs ...error) string {
	for _, e := range errs {
		if e != nil {
			return errText(e)
		}
	}
	return ""
}

// --- Environment variables (account)

type envData struct {
	Vars     []api.Variable
	Revealed map[string]string
}

func (s *Server) envPage(w http.ResponseWriter, r *http.Request) { s.showEnv(w, r, nil) }

func (s *Server) showEnv(w http.ResponseWriter, r *http.Request, revealed map[string]string) {
	who, err1 := s.whoami(r)
	d := &envData{Revealed: revealed}
	err2 := s.call(r, http.MethodGet, nil, nil, &d.Vars, "/v1/users/me/env")
	s.render(w, r, "env", &view{Title: "Environment variables", Who: who, Error: firstErr(err1, err2), Data: d})
}

// varWrite reads a row's form: name, value, the secret checkbox, and
// whether the row showed a hidden value (then an empty value keeps it).
// keep is true when nothing is to be written.
func varWrite(r *http.Request) (name string, body *api.VariableWrite, keep bool, err error) {
	name = strings.TrimSpace(r.PostFormValue("name"))
	value := r.PostFormValue("value")
	secret := r.PostFormValue("secret") != ""
	if r.PostFormValue("hidden") != "" && value == "" {
		if secret == (r.PostFormValue("was_secret") != "") {
			return name, nil, true, nil
		}
		return name, nil, false, &api.Error{Code: api.CodeInvalidRequest,
			Message: "type the value again to change the secret flag of a hidden value"}
	}
	return name, &api.VariableWrite{Value: &value, Secret: &secret}, false, nil
}

func (s *Server) envSave(w http.ResponseWriter, r *http.Request) {
	name, body, keep, err := varWrite(r)
	row := name
	method := http.MethodPatch
	if r.PostFormValue("new") != "" {
		method, row = http.MethodPost, addRow
	}
	if err == nil && !keep {
		err = s.call(r, method, nil, body, nil, "/v1/users/me/env/%s", "variable name", name)
	}
	s.done(w, r, "/env", row, err, "Saved "+name+".")
}

func (s *Server) envDelete(w http.ResponseWriter, r *http.Request) {
	name := r.PostFormValue("name")
	err := s.call(r, http.MethodDelete, nil, nil, nil, "/v1/users/me/env/%s", "variable name", name)
	s.done(w, r, "/env", name, err, "Deleted "+name+".")
}

// envReveal asks the agent for one value in clear (it audits the reveal).
// The script's eye icon gets the bare value; a browser without script
// gets the page with that one value shown.
func (s *Server) envReveal(w http.ResponseWriter, r *http.Request) {
	name := r.PostFormValue("name")
	var v api.Variable
	if err := s.call(r, http.MethodGet, reveal, nil, &v, "/v1/users/me/env/%s", "variable name", name); err != nil {
		s.revealFailed(w, r, "/env", name, err)
		return
	}
	if wantsValue(r) {
		writeValue(w, v.Value)
		return
	}
	s.showEnv(w, r, map[string]string{name: v.Value})
}

func wantsValue(r *http.Request) bool { return r.Header.Get("X-Console-Reveal") == "value" }

func writeValue(w http.ResponseWriter, value string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, value)
}

func (s *Server) revealFailed(w http.ResponseWriter, r *http.Request, to, row string, err error) {
	if wantsValue(r) {
		http.Error(w, errText(err), http.StatusBadRequest)
		return
	}
	s.done(w, r, to, row, err, "")
}

// --- Secrets

type secretRow struct {
	Scope string // "private" or the project's name: where Read and Delete go
	api.SecretListed
	Revealed *string
}

type secretsData struct {
	Rows     []secretRow
	Projects []string // where a new secret may go
}

func (s *Server) secretsPage(w http.ResponseWriter, r *http.Request) {
	s.showSecrets(w, r, "", "", nil)
}

// showSecrets lists every secret the caller can read in one GET
// /v1/secrets: their private ones, then each of their projects'.
func (s *Server) showSecrets(w http.ResponseWriter, r *http.Request, scope, name string, value *string) {
	who, err1 := s.whoami(r)
	d := &secretsData{}
	var listed []api.SecretListed
	err2 := s.call(r, http.MethodGet, nil, nil, &listed, "/v1/secrets")
	for _, sec := range listed {
		row := secretRow{Scope: api.VisibilityPrivate, SecretListed: sec}
		if sec.Visibility == api.VisibilityProject {
			row.Scope = sec.Project
		}
		d.Rows = append(d.Rows, row)
	}
	var projects []api.Project
	err3 := s.call(r, http.MethodGet, nil, nil, &projects, "/v1/projects")
	for _, p := range projects {
		d.Projects = append(d.Projects, p.Name)
	}
	for i := range d.Rows {
		if d.Rows[i].Scope == scope && d.Rows[i].Name == name {
			d.Rows[i].Revealed = value
		}
	}
	s.render(w, r, "secrets", &view{Title: "Secrets", Who: who, Error: firstErr(err1, err2, err3), Data: d})
}

// secretPath is the API path of a secret in scope "private" or a project.
func secretPath(scope, name string) (string, error) {
	if scope == "private" {
		return client.Path("/v1/users/me/secrets/%s", "secret name", name)
	}
	return client.Path("/v1/projects/%s/secrets/%s", "project", scope, "secret name", name)
}

func (s *Server) secretCall(r *http.Request, method, scope, name string, q url.Values, in, out any) error {
	path, err := secretPath(scope, name)
	if err != nil {
		return err
	}
	_, err = s.agent.Call(r.Context(), method, path, q, in, out)
	return err
}

func (s *Server) secretCreate(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimSpace(r.PostFormValue("name"))
	scope := r.PostFormValue("scope")
	body := &api.SecretWrite{Value: r.PostFormValue("value")}
	var err error
	if r.PostFormValue("kind") == api.SecretFile {
		body.File = true
		body.Value, err = uploaded(r, "file")
	}
	if err == nil {
		err = s.secretCall(r, http.MethodPost, scope, name, nil, body, nil)
	}
	s.done(w, r, "/secrets", addRow, err, "Created secret "+name+".")
}

// uploaded is the base64 of the file sent in field, as the agent takes a
// file secret.
func uploaded(r *http.Request, field string) (string, error) {
	f, _, err := r.FormFile(field)
	if err != nil {
		return "", &api.Error{Code: api.CodeInvalidRequest, Message: "choose a file to upload"}
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return "", &api.Error{Code: api.CodeInvalidRequest, Message: "read the uploaded file: " + err.Error()}
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// secretRead reveals a secret (audited by the agent): a text secret in the
// page, a file secret as a download of its bytes.
func (s *Server) secretRead(w http.ResponseWriter, r *http.Request) {
	scope, name := r.PostFormValue("scope"), r.PostFormValue("name")
	var sec api.Secret
	err := s.secretCall(r, http.MethodGet, scope, name, reveal, nil, &sec)
	if err == nil && sec.Value == nil {
		err = &api.Error{Code: api.CodeBadReply, Message: "the agent sent no value"}
	}
	if err != nil {
		s.revealFailed(w, r, "/secrets", name, err)
		return
	}
	if sec.Kind == api.SecretFile {
		b, err := base64.StdEncoding.DecodeString(*sec.Value)
		if err != nil {
			s.done(w, r, "/secrets", name, &api.Error{Code: api.CodeBadReply, Message: "the file is not valid base64"}, "")
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", name))
		w.Write(b)
		return
	}
	if wantsValue(r) {
		writeValue(w, *sec.Value)
		return
	}
	s.showSecrets(w, r, scope, name, sec.Value)
}

func (s *Server) secretDelete(w http.ResponseWriter, r *http.Request) {
	scope, name := r.PostFormValue("scope"), r.PostFormValue("name")
	err := s.secretCall(r, http.MethodDelete, scope, name, nil, nil, nil)
	s.done(w, r, "/secrets", name, err, "Deleted secret "+name+".")
}

// --- Workloads and audit

func (s *Server) workloadsPage(w http.ResponseWriter, r *http.Request) {
	who, err1 := s.whoami(r)
	var list []api.Workload
	err2 := s.call(r, http.MethodGet, nil, nil, &list, "/v1/workloads")
	s.render(w, r, "workloads", &view{Title: "Workloads", Who: who, Error: firstErr(err1, err2), Data: list})
}

// auditFilter is the audit page's query: the filters of `envlet audit
// list`, as typed (the agent checks them).
type auditFilter struct {
	Since, Until, User, Project, Group, Action, Limit string
}

// auditPageLimit is how many records the page asks for unless told:
// recent ones, a page's worth, not the CLI's 1000.
const auditPageLimit = "100"

type auditData struct {
	Filter  auditFilter
	Asked   bool              // the agent answered the query
	List    api.AuditList     // as the agent sent it, oldest first
	Records []api.AuditRecord // List.Records newest first
	Refused string            // why the agent did not answer
	HMAC    string
}

func (s *Server) auditPage(w http.ResponseWriter, r *http.Request) { s.showAudit(w, r, "") }

// showAudit lists the records the agent lets the user read: admins all,
// project owners their projects'; anyone else sees the agent's refusal.
func (s *Server) showAudit(w http.ResponseWriter, r *http.Request, hmac string) {
	who, err := s.whoami(r)
	in := r.URL.Query()
	d := &auditData{HMAC: hmac, Filter: auditFilter{Since: in.Get("since"), Until: in.Get("until"), User: in.Get("user"),
		Project: in.Get("project"), Group: in.Get("group"), Action: in.Get("action"), Limit: in.Get("limit")}}
	if d.Filter.Limit == "" {
		d.Filter.Limit = auditPageLimit
	}
	q := url.Values{}
	f := d.Filter
	for k, v := range map[string]string{"since": f.Since, "until": f.Until, "user": f.User, "project": f.Project,
		"group": f.Group, "action": f.Action, "limit": f.Limit} {
		if v = strings.TrimSpace(v); v != "" {
			q.Set(k, v)
		}
	}
	if qerr := s.call(r, http.MethodGet, q, nil, &d.List, "/v1/audit"); qerr != nil {
		d.Refused = errText(qerr)
		var ae *api.Error
		if errors.As(qerr, &ae) && ae.Code == api.CodeDenied {
			d.Refused = "The agent refused: " + d.Refused
		}
	} else {
		d.Asked = true
		d.Records = slices.Clone(d.List.Records)
		slices.Reverse(d.Records)
	}
	s.render(w, r, "audit", &view{Title: "Audit", Who: who, Error: firstErr(err), Data: d})
}

// auditHMAC gives the HMAC the audit log records for a value, to search
// the log for it; the value itself is not shown back.
func (s *Server) auditHMAC(w http.ResponseWriter, r *http.Request) {
	var out api.HMACReply
	if err := s.call(r, http.MethodPost, nil, &api.HMACRequest{Value: r.PostFormValue("value")}, &out, "/v1/audit/hmac"); err != nil {
		s.done(w, r, "/audit", "", err, "")
		return
	}
	s.showAudit(w, r, out.HMAC)
}

// moved returns list with the item at i swapped with its neighbour in
// direction dir ("up" or "down"); ok is false when it cannot move.
func moved(list []string, i int, dir string) ([]string, bool) {
	j := i - 1
	if dir == "down" {
		j = i + 1
	}
	if i < 0 || j < 0 || j >= len(list) {
		return nil, false
	}
	out := slices.Clone(list)
	out[i], out[j] = out[j], out[i]
	return out, true
}
