package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"time"

	"github.com/envlet/envlet/agent/api"
)

// The admin API: HTTP/1.1 + JSON on admin.sock, under /v1/ (docs/admin-api.md).

const maxBodyBytes = 1 << 20

type ctxKey struct{}

// caller is who sent an admin request.
type caller struct {
	peer  peer
	user  string
	admin bool
}

func (a *Agent) serveAdmin(ctx context.Context, l net.Listener) error {
	srv := &http.Server{
		Handler:           a.adminHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          a.log.StandardLogger(nil),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			ctx, c = withEcho(ctx, c) // echo.go
			uc := unixConnOf(c)
			if uc == nil {
				return ctx
			}
			p, err := verifiedPeerOf(uc)
			if err != nil {
				return ctx
			}
			admin := a.isAdmin(p) // reads /proc through the pidfd, then lets it go
			p.release()
			return context.WithValue(ctx, ctxKey{}, &caller{peer: p, user: a.userName(p.uid), admin: admin})
		},
	}
	errc := make(chan error, 1)
	if ul, ok := l.(*net.UnixListener); ok {
		l = &limitedListener{UnixListener: ul, lim: a.limiter("admin")}
	}
	l = echoListener{l} // clears the request and reply bytes net/http's buffers keep (echo.go)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		return nil
	}
}

// handler is an admin endpoint: it returns the reply body and status, or
// an error (an *Error carries its code).
type handler func(r *http.Request, c *caller) (any, int, error)

func (a *Agent) adminHandler() http.Handler {
	mux := http.NewServeMux()
	h := func(pattern string, fn handler) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			a.noteAdminRequest(r.Method) // metrics.go
			c, _ := r.Context().Value(ctxKey{}).(*caller)
			if c == nil {
				e := errorf(CodeDenied, "the caller's credentials could not be read")
				a.audit.write(auditRecord{Action: "refuse", Code: e.Code, Reason: e.Message, Request: r.Method + " " + r.URL.Path, Socket: "admin"}, nil, "")
				writeErr(w, e)
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
			r, wipes := withWipes(r)
			// For the record a change writes before it is made (audit.go commitAudited).
			r = r.WithContext(context.WithValue(r.Context(), requestKey{}, r.Method+" "+r.URL.Path))
			if err := a.auditRevealRequest(r, c); err != nil {
				writeErr(w, err)
				return
			}
			defer wipes.wipe() // the values decoded from the body and put in the reply (wipe.go)
			body, status, err := fn(r, c)
			if err != nil {
				e := codeOf(err)
				a.noteRefusal("admin", e.Code) // metrics.go
				if e.Code == CodeInternal {
					a.log.Error("admin request failed", "method", r.Method, "path", r.URL.Path, "error", err)
					e = &Error{Code: CodeInternal, Message: "internal error; see the agent log"}
				}
				if e.Code == CodeDenied {
					// The workload socket's per-uid budget (server.go): a
					// flood of refusals is counted, not recorded one by one.
					if ok, skipped := a.limiter("admin").auditBudget(c.peer.uid); ok {
						reason := e.Message
						if skipped > 0 {
							reason = fmt.Sprintf("%s (and %d earlier refusals of this uid not recorded one by one: too many)", e.Message, skipped)
						}
						a.audit.write(auditRecord{Action: "refuse", Code: e.Code, Reason: reason, Request: r.Method + " " + r.URL.Path, Socket: "admin"}, &c.peer, c.user)
					}
				}
				writeErr(w, e)
				return
			}
			if status == http.StatusNoContent {
				w.WriteHeader(status)
				return
			}
			// Reply values are strings over locked memory the wipe list
			// frees (replyString, echo.go).
			writeJSONPadded(w, status, body, len(valueStrings(body)) > 0)
		})
	}
	h("GET /v1/whoami", a.apiWhoami)
	h("GET /v1/status", a.apiStatus)
	h("GET /v1/users/{user}/env", a.apiListAccount)
	h("DELETE /v1/users/{user}/env", a.apiDeleteAllAccount)
	h("GET /v1/users/{user}/env/{name}", a.apiGetAccount)
	h("POST /v1/users/{user}/env/{name}", a.apiPutAccount(writeCreate))
	h("PUT /v1/users/{user}/env/{name}", a.apiPutAccount(writeUpsert))
	h("PATCH /v1/users/{user}/env/{name}", a.apiPutAccount(writeUpdate))
	h("DELETE /v1/users/{user}/env/{name}", a.apiDeleteAccount)
	h("GET /v1/projects", a.apiListProjects)
	h("POST /v1/projects", a.apiCreateProject)
	h("GET /v1/projects/{p}", a.apiGetProject)
	h("DELETE /v1/projects/{p}", a.apiDeleteProject)
	h("POST /v1/projects/{p}/members", a.apiAddMember)
	h("DELETE /v1/projects/{p}/members/{user}", a.apiRemoveMember)
	h("DELETE /v1/projects/{p}/members/me", a.apiLeaveProject) // admin_views.go
	h("GET /v1/projects/{p}/env", a.apiListProjectEnv)
	h("PUT /v1/projects/{p}/env/{name}", a.apiPutProjectVar)
	h("DELETE /v1/projects/{p}/env/{name}", a.apiDeleteProjectVar)
	h("PUT /v1/projects/{p}/groups", a.apiSetProjectGroups)
	h("GET /v1/groups", a.apiListGroups)
	h("POST /v1/groups", a.apiCreateGroup)
	h("GET /v1/groups/{g}", a.apiGetGroup)
	h("DELETE /v1/groups/{g}", a.apiDeleteGroup)
	h("PUT /v1/groups/{g}/env/{name}", a.apiPutGroupVar)
	h("DELETE /v1/groups/{g}/env/{name}", a.apiDeleteGroupVar)
	h("POST /v1/groups/{g}/assign", a.apiAssignGroup(false))
	h("POST /v1/groups/{g}/unassign", a.apiAssignGroup(true))
	h("GET /v1/secrets", a.apiListAllSecrets) // admin_views.go
	h("GET /v1/users/{user}/secrets", a.apiListSecrets)
	h("GET /v1/users/{user}/secrets/{name}", a.apiGetSecret)
	h("POST /v1/users/{user}/secrets/{name}", a.apiPutSecret(writeCreate))
	h("PUT /v1/users/{user}/secrets/{name}", a.apiPutSecret(writeUpsert))
	h("DELETE /v1/users/{user}/secrets/{name}", a.apiDeleteSecret)
	h("GET /v1/projects/{p}/secrets", a.apiListSecrets)
	h("GET /v1/projects/{p}/secrets/{name}", a.apiGetSecret)
	h("POST /v1/projects/{p}/secrets/{name}", a.apiPutSecret(writeCreate))
	h("PUT /v1/projects/{p}/secrets/{name}", a.apiPutSecret(writeUpsert))
	h("DELETE /v1/projects/{p}/secrets/{name}", a.apiDeleteSecret)
	h("POST /v1/audit/hmac", a.apiAuditHMAC)
	h("GET /v1/workloads", a.apiListWorkloads)
	h("POST /v1/workloads", a.apiRegisterWorkload)
	h("DELETE /v1/workloads/{id}", a.apiDeleteWorkload)
	h("GET /v1/explain", a.apiExplain)
	h("POST /v1/explain", a.apiExplainPreview) // admin_views.go
	mux.HandleFunc("POST /v1/runs", a.serveRun)
	h("PUT /v1/workloads/{id}", a.apiUpdateWorkload)
	h("GET /v1/audit", a.apiAuditList)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, errorf(CodeNotFoundGeneric, "no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) { writeJSONPadded(w, status, v, false) }

// writeJSONPadded is writeJSON; with pad (a reply that holds values) the
// reply is padded past net/http's response buffer, which then keeps no
// copy of it (echo.go).
func writeJSONPadded(w http.ResponseWriter, status int, v any, pad bool) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	writeJSONLocked(bodyPool, w, v, pad) // indented, through locked memory (wipe.go)
}

func writeErr(w http.ResponseWriter, e *Error) {
	writeJSON(w, httpStatus(e.Code), map[string]any{"error": map[string]string{"code": e.Code, "message": e.Message}})
}

// decodeBody reads a JSON object into v, refusing unknown fields, trailing
// data and bodies over the limit. Its errors never quote the body.
func decodeBody(r *http.Request, v any) error {
	// In locked memory and decoded in place, its values wiped when the
	// request is done (wipe.go).
	buf, err := readBody(bodyPool, r.Body, r.ContentLength, maxBodyBytes)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) || errors.Is(err, errBodyTooLarge) {
			return errorf(CodeInvalidRequest, "request body is over %d bytes", maxBodyBytes)
		}
		if errors.Is(err, errBodyBusy) {
			return errorf(CodeBusy, "the agent is reading too many request bodies; retry")
		}
		return errorf(CodeInvalidRequest, "read request body: %v", err)
	}
	defer buf.Free()
	forgetRequestBody(r, buf.Bytes()) // its echo in net/http's read buffer (echo.go)
	if err := strictUnmarshal(buf.Bytes(), v); err != nil {
		var e *Error
		if errors.As(err, &e) {
			return e // a value JSON would change (jsonstr.go)
		}
		if errors.Is(err, errTrailing) {
			return errorf(CodeInvalidRequest, "decode request body: trailing data after the object")
		}
		return errorf(CodeInvalidRequest, "decode request body: %s", jsonErrText(err))
	}
	requestWipes(r).addValues(lockedValues(v))
	return nil
}

func wantReveal(r *http.Request) bool {
	v := r.URL.Query().Get("reveal")
	return v == "1" || v == "true"
}

// varJSON is a variable as the API shows it.
type varJSON struct {
	Name       string `json:"name"`
	Value      string `json:"value"`
	Secret     bool   `json:"secret"`
	Masked     bool   `json:"masked"`
	FromSecret string `json:"from_secret,omitempty"` // the value is this secret's, resolved per workload
	api.Dated         // set by the caller (model.stampVars): showVar has no key
	Source     string `json:"source,omitempty"` // in a project's whole view: project or group:NAME (admin_views.go)
}

func showVar(r *http.Request, name string, v *variable, reveal bool) varJSON {
	out := varJSON{Name: name, Secret: v.secret()}
	if v.fromRef() {
		// The value depends on the workload (whose secret it takes): there
		// is nothing to reveal here.
		out.Value, out.Masked, out.Secret, out.FromSecret = maskText, true, true, string(v.value())
		return out
	}
	if masked(name, v.secret()) && !reveal {
		out.Value, out.Masked = maskText, true
	} else {
		out.Value = replyString(r, v.value())
	}
	return out
}

func showVars(r *http.Request, set varSet, reveal bool) []varJSON {
	out := []varJSON{}
	for _, n := range set.sortedNames() {
		out = append(out, showVar(r, n, set[n], reveal))
	}
	return out
}

// auditReveal records which masked names a caller saw in clear.
func (a *Agent) auditReveal(c *caller, scope string, names []string) {
	for _, n := range names {
		a.audit.write(auditRecord{Action: "reveal", Scope: scope, Name: n, Socket: "admin"}, &c.peer, c.user)
	}
}

func (a *Agent) apiWhoami(r *http.Request, c *caller) (any, int, error) {
	return map[string]any{"user": c.user, "uid": c.peer.uid, "admin": c.admin}, 200, nil
}

func (a *Agent) apiStatus(r *http.Request, c *caller) (any, int, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	vars := 0
	for _, u := range a.model.users {
		vars += len(u.vars)
	}
	for _, p := range a.model.projects {
		vars += len(p.vars)
	}
	projects := 0
	for _, p := range a.model.projects {
		if p.metaRev != 0 {
			projects++
		}
	}
	groups := 0
	for _, g := range a.model.groups {
		vars += len(g.vars)
		if g.metaRev != 0 {
			groups++
		}
	}
	secrets := 0
	for _, s := range a.model.userSecrets {
		secrets += len(s)
	}
	for _, s := range a.model.projSecrets {
		secrets += len(s)
	}
	st := a.pool.Stats()
	out := map[string]any{
		"revision":       a.model.rev,
		"users":          len(a.model.users),
		"projects":       projects,
		"variables":      vars,
		"groups":         groups,
		"secrets":        secrets,
		"workloads":      len(a.workloads),
		"uptime_seconds": int64(time.Since(a.started).Seconds()),
		"memory_locked":  st.Locked,
		"locked_bytes":   st.LockedBytes,
		// Admin request bodies and replies, in their own pool (wipe.go).
		"body_locked_bytes": bodyPool.Stats().LockedBytes,
	}
	for k, v := range a.backendStatus() { // backend, connected, stale_seconds, …
		out[k] = v
	}
	return out, 200, nil
}

// accountUser resolves {user} ("me" is the caller) and checks the caller
// may act on that account: its owner or an admin.
func accountUser(r *http.Request, c *caller) (string, error) {
	u := r.PathValue("user")
	if u == "me" {
		u = c.user
	}
	if !validIdent(u) {
		return "", errorf(CodeInvalidRequest, "invalid user name")
	}
	if u != c.user && !c.admin {
		return "", errorf(CodeDenied, "%s may not manage the account variables of %s", c.user, u)
	}
	return u, nil
}

func (a *Agent) apiListAccount(r *http.Request, c *caller) (any, int, error) {
	u, err := accountUser(r, c)
	if err != nil {
		return nil, 0, err
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	out := []varJSON{}
	if us := a.model.users[u]; us != nil {
		out = a.model.stampVars(showVars(r, us.vars, wantReveal(r)), func(n string) string { return keyAcctVar(u, n) })
	}
	if wantReveal(r) {
		a.auditReveal(c, "user:"+u, maskedNames(out))
	}
	return out, 200, nil
}

func maskedNames(vs []varJSON) []string {
	var out []string
	for _, v := range vs {
		if masked(v.Name, v.Secret) && v.FromSecret == "" {
			out = append(out, v.Name)
		}
	}
	return out
}

func (a *Agent) apiGetAccount(r *http.Request, c *caller) (any, int, error) {
	u, err := accountUser(r, c)
	if err != nil {
		return nil, 0, err
	}
	name := r.PathValue("name")
	a.mu.RLock()
	defer a.mu.RUnlock()
	us := a.model.users[u]
	if us == nil || us.vars[name] == nil {
		return nil, 0, errorf(CodeNotFound, "account variable %s does not exist for %s", clipName(name), u)
	}
	v := showVar(r, name, us.vars[name], wantReveal(r))
	v.Dated = a.model.dates[keyAcctVar(u, name)]
	if wantReveal(r) {
		a.auditReveal(c, "user:"+u, maskedNames([]varJSON{v}))
	}
	return v, 200, nil
}

// clipName keeps a name from a URL printable in a message: a valid name is
// shown, anything else is not echoed.
func clipName(name string) string {
	if validVarName(name) {
		return name
	}
	return "(invalid name)"
}

// varBody is the body of a variable write.
type varBody struct {
	Value      *lockedValue `json:"value"`  // in locked memory until the request is done (jsonstr.go)
	Secret     *bool        `json:"secret"` // nil: keep the flag a stored variable has
	FromSecret string       `json:"from_secret"`
}

// decode reads the body of a variable write into b and checks it.
func (b *varBody) decode(r *http.Request) error {
	if err := decodeBody(r, b); err != nil {
		return err
	}
	switch {
	case b.FromSecret != "" && b.Value != nil:
		return errorf(CodeInvalidRequest, "give value or from_secret, not both")
	case b.FromSecret != "" && !validVarName(b.FromSecret):
		return errorf(CodeInvalidName, "from_secret is not a valid secret name (%d bytes)", len(b.FromSecret))
	case b.FromSecret == "" && b.Value == nil:
		return errorf(CodeInvalidRequest, "value is missing")
	}
	return nil
}

// record returns what the variable's record holds: the value, or for
// from_secret the secret's name (flagFromRef; always secret), and the
// flags function for the write.
func (b *varBody) record() ([]byte, func(old byte) byte) {
	if b.FromSecret != "" {
		return []byte(b.FromSecret), func(byte) byte { return flagFromRef | flagSecret }
	}
	return b.Value.Bytes(), b.flags
}

// auditWrite is the audit record of a variable write: the HMAC of the
// value, or the secret it takes its value from.
func (a *Agent) auditWrite(action, scope, name string, b *varBody, value []byte) auditRecord {
	r := auditRecord{Action: action, Scope: scope, Name: name, Socket: "admin"}
	if b.FromSecret != "" {
		r.FromSecret = b.FromSecret
	} else {
		r.HMAC = a.audit.sum(value)
	}
	return r
}

// flags returns the record flags for the write, given the flags of the
// variable it replaces (0 when new).
func (b *varBody) flags(old byte) byte {
	if b.Secret == nil {
		return old & flagSecret
	}
	if *b.Secret {
		return flagSecret
	}
	return 0
}

func (a *Agent) apiPutAccount(mode varWrite) handler {
	return func(r *http.Request, c *caller) (any, int, error) {
		u, err := accountUser(r, c)
		if err != nil {
			return nil, 0, err
		}
		var b varBody
		if err := b.decode(r); err != nil {
			return nil, 0, err
		}
		name := r.PathValue("name")
		value, flags := b.record()
		defer clear(value)
		if _, err := a.putAccountVar(r.Context(), u, name, value, flags, mode); err != nil {
			return nil, 0, err
		}
		action := map[varWrite]string{writeCreate: "create", writeUpdate: "update", writeUpsert: "set"}[mode]
		a.audit.write(a.auditWrite(action, "user:"+u, name, &b, value), &c.peer, c.user)
		a.mu.RLock()
		defer a.mu.RUnlock()
		status := 200
		if mode == writeCreate {
			status = 201
		}
		if us := a.model.users[u]; us != nil && us.vars[name] != nil {
			v := showVar(r, name, us.vars[name], false)
			v.Dated = a.model.dates[keyAcctVar(u, name)]
			return v, status, nil
		}
		return varJSON{Name: name}, status, nil
	}
}

func (a *Agent) apiDeleteAccount(r *http.Request, c *caller) (any, int, error) {
	u, err := accountUser(r, c)
	if err != nil {
		return nil, 0, err
	}
	name := r.PathValue("name")
	if !validVarName(name) {
		return nil, 0, errorf(CodeNotFound, "account variable %s does not exist for %s", clipName(name), u)
	}
	if _, err := a.deleteAccountVars(r.Context(), u, []string{name}); err != nil {
		return nil, 0, err
	}
	a.audit.write(auditRecord{Action: "delete", Scope: "user:" + u, Name: name, Socket: "admin"}, &c.peer, c.user)
	return nil, http.StatusNoContent, nil
}

func (a *Agent) apiDeleteAllAccount(r *http.Request, c *caller) (any, int, error) {
	u, err := accountUser(r, c)
	if err != nil {
		return nil, 0, err
	}
	n, err := a.deleteAccountVars(r.Context(), u, nil)
	if err != nil {
		return nil, 0, err
	}
	a.audit.write(auditRecord{Action: "delete-all", Scope: "user:" + u, Socket: "admin"}, &c.peer, c.user)
	return map[string]int{"deleted": n}, 200, nil
}

// projectJSON is a project as the API shows it.
type projectJSON struct {
	Name    string   `json:"name"`
	Owners  []string `json:"owners"`
	Members []string `json:"members"`
	Groups  []string `json:"groups"`
	api.Dated
}

// showProject is called with a.mu held.
func (m *model) showProject(name string, p *project) projectJSON {
	nz := func(s []string) []string {
		if s == nil {
			return []string{}
		}
		return s
	}
	return projectJSON{Name: name, Owners: nz(p.meta.Owners), Members: nz(p.meta.Members), Groups: nz(p.meta.Groups), Dated: m.dates[keyProjMeta(name)]}
}

// projectRole returns what the caller is in project p: "admin", "owner",
// "member" or "".
func (a *Agent) projectRole(c *caller, p *project) string {
	switch {
	case c.admin:
		return "admin"
	case p != nil && contains(p.meta.Owners, c.user):
		return "owner"
	case p != nil && contains(p.meta.Members, c.user):
		return "member"
	}
	return ""
}

func (a *Agent) apiListProjects(r *http.Request, c *caller) (any, int, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	out := []projectJSON{}
	for name, p := range a.model.projects {
		if p.metaRev != 0 && a.projectRole(c, p) != "" {
			out = append(out, a.model.showProject(name, p))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, 200, nil
}

func (a *Agent) apiCreateProject(r *http.Request, c *caller) (any, int, error) {
	if !c.admin {
		return nil, 0, errorf(CodeDenied, "only admins create projects")
	}
	var b struct {
		Name string `json:"name"`
	}
	if err := decodeBody(r, &b); err != nil {
		return nil, 0, err
	}
	if err := a.createProject(r.Context(), b.Name); err != nil {
		return nil, 0, err
	}
	a.audit.write(auditRecord{Action: "create", Scope: "project:" + b.Name, Socket: "admin"}, &c.peer, c.user)
	return a.projectReply(b.Name, 201)
}

func (a *Agent) projectReply(name string, status int) (any, int, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	p := a.model.liveProject(name)
	if p == nil {
		return nil, 0, errorf(CodeProjectNotFound, "project %s does not exist", name)
	}
	return a.model.showProject(name, p), status, nil
}

// projectFor looks a project up and checks the caller holds at least role
// ("member" or "owner"; admins pass both).
func (a *Agent) projectFor(r *http.Request, c *caller, role string) (string, error) {
	name := r.PathValue("p")
	a.mu.RLock()
	defer a.mu.RUnlock()
	p := a.model.liveProject(name)
	denied := func() error {
		if !validIdent(name) {
			name = "(invalid name)"
		}
		return errorf(CodeDenied, "%s is not %s of project %s", c.user, map[string]string{"member": "a member", "owner": "an owner"}[role], name)
	}
	if p == nil {
		// Only admins learn that a project does not exist: to anyone else
		// a missing project is refused as one they are not in, so the
		// reply does not tell which projects exist.
		if !c.admin {
			return "", denied()
		}
		if !validIdent(name) {
			return "", errorf(CodeProjectNotFound, "no such project")
		}
		return "", errorf(CodeProjectNotFound, "project %s does not exist", name)
	}
	got := a.projectRole(c, p)
	if got == "admin" || got == "owner" || (got == "member" && role == "member") {
		return name, nil
	}
	return "", denied()
}

func (a *Agent) apiGetProject(r *http.Request, c *caller) (any, int, error) {
	name, err := a.projectFor(r, c, "member")
	if err != nil {
		return nil, 0, err
	}
	return a.projectReply(name, 200)
}

func (a *Agent) apiDeleteProject(r *http.Request, c *caller) (any, int, error) {
	if !c.admin {
		return nil, 0, errorf(CodeDenied, "only admins delete projects")
	}
	name := r.PathValue("p")
	if err := a.deleteProject(r.Context(), name); err != nil {
		return nil, 0, err
	}
	a.audit.write(auditRecord{Action: "delete", Scope: "project:" + name, Socket: "admin"}, &c.peer, c.user)
	return nil, http.StatusNoContent, nil
}

func (a *Agent) apiAddMember(r *http.Request, c *caller) (any, int, error) {
	name, err := a.projectFor(r, c, "owner")
	if err != nil {
		return nil, 0, err
	}
	var b struct {
		User  string `json:"user"`
		Owner bool   `json:"owner"`
	}
	if err := decodeBody(r, &b); err != nil {
		return nil, 0, err
	}
	if !validIdent(b.User) {
		return nil, 0, errorf(CodeInvalidRequest, "invalid user name")
	}
	err = a.updateProject(r.Context(), name, func(m *projectMeta) error {
		m.Owners, m.Members = remove(m.Owners, b.User), remove(m.Members, b.User)
		if b.Owner {
			m.Owners = append(m.Owners, b.User)
		} else {
			m.Members = append(m.Members, b.User)
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	a.audit.write(auditRecord{Action: "add-member", Scope: "project:" + name, Name: b.User, Socket: "admin"}, &c.peer, c.user)
	return a.projectReply(name, 200)
}

func (a *Agent) apiRemoveMember(r *http.Request, c *caller) (any, int, error) {
	name, err := a.projectFor(r, c, "owner")
	if err != nil {
		return nil, 0, err
	}
	user := r.PathValue("user")
	if user == c.user {
		return a.apiLeaveProject(r, c) // as project leave: not the last owner (admin_views.go)
	}
	err = a.updateProject(r.Context(), name, func(m *projectMeta) error {
		if !contains(m.Owners, user) && !contains(m.Members, user) {
			return errorf(CodeNotFoundGeneric, "%s is not a member of project %s", clipIdent(user), name)
		}
		m.Owners, m.Members = remove(m.Owners, user), remove(m.Members, user)
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	a.audit.write(auditRecord{Action: "remove-member", Scope: "project:" + name, Name: user, Socket: "admin"}, &c.peer, c.user)
	return a.projectReply(name, 200)
}

func clipIdent(s string) string {
	if validIdent(s) {
		return s
	}
	return "(invalid name)"
}

func remove(list []string, s string) []string {
	out := list[:0]
	for _, x := range list {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

func (a *Agent) apiListProjectEnv(r *http.Request, c *caller) (any, int, error) {
	name, err := a.projectFor(r, c, "member")
	if err != nil {
		return nil, 0, err
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	p := a.model.liveProject(name)
	if p == nil {
		return nil, 0, errorf(CodeProjectNotFound, "project %s does not exist", name)
	}
	// Members see masked values masked; owners and admins may reveal.
	reveal := wantReveal(r) && a.projectRole(c, p) != "member"
	out := a.model.stampVars(showVars(r, p.vars, reveal), func(n string) string { return keyProjVar(name, n) })
	if reveal {
		a.auditReveal(c, "project:"+name, maskedNames(out))
	}
	if wantGroups(r) {
		out = a.withGroupVars(r, c, p, out) // admin_views.go
	}
	return out, 200, nil
}

func (a *Agent) apiPutProjectVar(r *http.Request, c *caller) (any, int, error) {
	project, err := a.projectFor(r, c, "owner")
	if err != nil {
		return nil, 0, err
	}
	var b varBody
	if err := b.decode(r); err != nil {
		return nil, 0, err
	}
	name := r.PathValue("name")
	value, flags := b.record()
	defer clear(value)
	if err := a.putProjectVar(r.Context(), project, name, value, flags); err != nil {
		return nil, 0, err
	}
	a.audit.write(a.auditWrite("set", "project:"+project, name, &b, value), &c.peer, c.user)
	a.mu.RLock()
	defer a.mu.RUnlock()
	if p := a.model.liveProject(project); p != nil && p.vars[name] != nil {
		v := showVar(r, name, p.vars[name], false)
		v.Dated = a.model.dates[keyProjVar(project, name)]
		return v, 200, nil
	}
	return varJSON{Name: name}, 200, nil
}

func (a *Agent) apiDeleteProjectVar(r *http.Request, c *caller) (any, int, error) {
	project, err := a.projectFor(r, c, "owner")
	if err != nil {
		return nil, 0, err
	}
	name := r.PathValue("name")
	if !validVarName(name) {
		return nil, 0, errorf(CodeNotFound, "project variable %s does not exist in %s", clipName(name), project)
	}
	if err := a.deleteProjectVar(r.Context(), project, name); err != nil {
		return nil, 0, err
	}
	a.audit.write(auditRecord{Action: "delete", Scope: "project:" + project, Name: name, Socket: "admin"}, &c.peer, c.user)
	return nil, http.StatusNoContent, nil
}

// workloadJSON is a registration as `workload list` shows it: no values.
type workloadJSON struct {
	ID        string   `json:"id"`
	User      string   `json:"user"`
	Project   string   `json:"project"`
	Match     Match    `json:"match"`
	Mount     bool     `json:"mount"`
	Source    string   `json:"source"`
	Path      string   `json:"path,omitempty"`
	TokenFile string   `json:"token_file,omitempty"`
	Runtime   []string `json:"runtime"`
	Execution []string `json:"execution"`
	Revision  int64    `json:"revision"`
	EnvRev    int64    `json:"env_revision"`
	Stale     bool     `json:"stale"`
	api.Dated
}

func (a *Agent) apiListWorkloads(r *http.Request, c *caller) (any, int, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	out := []workloadJSON{}
	for id, w := range a.workloads {
		if !c.admin && w.reg.User != c.user {
			continue
		}
		served := w.servedRev.Load()
		out = append(out, workloadJSON{
			ID: id, User: w.reg.User, Project: w.reg.Project, Match: w.reg.Match, Mount: w.reg.Mount,
			Source: w.source, Path: w.path, Runtime: a.ownNames(w.runtime), Execution: a.ownNames(w.execution),
			Revision: served, EnvRev: int64(w.envRev), TokenFile: w.tokenFile,
			// Served once, and the env has changed since: the running
			// program holds an old value.
			Stale: served != 0 && served < int64(w.envRev),
			Dated: a.workloadDates(id, w),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, 200, nil
}

func (a *Agent) apiRegisterWorkload(r *http.Request, c *caller) (any, int, error) {
	if !c.admin {
		return nil, 0, errorf(CodeDenied, "only admins register workloads")
	}
	reg, err := readRegistrationBody(r)
	if err != nil {
		return nil, 0, err
	}
	defer reg.wipeValues() // sealed in the store by then
	if reg.Match.Token {
		// Issued here and kept in the sealed record, so the token survives
		// a restart; the token file is written when the record applies.
		t, err := a.newToken()
		if err != nil {
			return nil, 0, err
		}
		reg.IssuedToken = string(t.Bytes())
		reg.wipe = append(reg.wipe, reg.IssuedToken)
		t.Free()
	}
	if err := a.registerWorkload(r.Context(), reg); err != nil {
		return nil, 0, err
	}
	a.audit.write(auditRecord{Action: "register", Scope: "workload:" + reg.ID, Socket: "admin", WorkloadUser: reg.User, Project: reg.Project}, &c.peer, c.user)
	reply := map[string]string{"id": reg.ID}
	a.mu.RLock()
	if w := a.workloads[reg.ID]; w != nil && w.tokenFile != "" {
		reply["token_file"] = w.tokenFile
	}
	a.mu.RUnlock()
	return reply, 201, nil
}

func (a *Agent) apiDeleteWorkload(r *http.Request, c *caller) (any, int, error) {
	if !c.admin {
		return nil, 0, errorf(CodeDenied, "only admins deregister workloads")
	}
	id := r.PathValue("id")
	was := a.workloadNamed(id)
	if a.endRunByAdmin(id) { // an envlet run: it ends, its CLI is told
		a.audit.write(was.record(auditRecord{Action: "deregister", Scope: "workload:" + id, Socket: "admin"}), &c.peer, c.user)
		return nil, http.StatusNoContent, nil
	}
	if err := a.deregisterWorkload(r.Context(), id); err != nil {
		return nil, 0, err
	}
	a.audit.write(was.record(auditRecord{Action: "deregister", Scope: "workload:" + id, Socket: "admin"}), &c.peer, c.user)
	return nil, http.StatusNoContent, nil
}

// explainJSON is one name of explain's answer.
type explainJSON struct {
	Name      string   `json:"name"`
	Value     string   `json:"value"`
	Masked    bool     `json:"masked"`
	Secret    bool     `json:"secret"`
	Cleared   bool     `json:"cleared"`
	Layer     string   `json:"layer"`
	Overrides []string `json:"overrides"`
	// SecretScope: for a variable set --from-secret, whose secret it took
	// ("secret:user:alice", "secret:project:p").
	SecretScope string `json:"secret_scope,omitempty"`
	// LeftOut: this layer's variable of that name is not served, and why
	// (its secret is not one the layer reaches; a protected name). Such
	// entries come first, before the name's winner if it has one.
	LeftOut string `json:"left_out,omitempty"`
}

func (a *Agent) apiExplain(r *http.Request, c *caller) (any, int, error) {
	q := r.URL.Query()
	id, user, project := q.Get("workload"), q.Get("user"), q.Get("project")
	a.mu.RLock()
	defer a.mu.RUnlock()
	var w *workload
	switch {
	case id != "" && user == "" && project == "":
		if w = a.workloads[id]; w == nil {
			if !c.admin {
				// As for a workload of another user: no hint that it
				// does not exist.
				return nil, 0, errorf(CodeDenied, "%s may explain only their own workloads", c.user)
			}
			return nil, 0, errorf(CodeWorkloadNotFound, "workload %s is not registered", clipIdent(id))
		}
		user, project = w.reg.User, w.reg.Project
	case id == "" && user != "" && project != "":
		if user == "me" {
			user = c.user
		}
		if !validIdent(user) || !validIdent(project) {
			return nil, 0, errorf(CodeInvalidRequest, "invalid user or project name")
		}
	default:
		return nil, 0, errorf(CodeInvalidRequest, "explain wants workload=ID, or user=U and project=P")
	}
	if !c.admin && user != c.user {
		return nil, 0, errorf(CodeDenied, "%s may explain only their own workloads", c.user)
	}
	p := a.model.liveProject(project)
	if !c.admin && w == nil && (p == nil || !p.isMember(c.user)) {
		// Project variables are for members: a pair explain would show them.
		return nil, 0, errorf(CodeDenied, "%s may explain only projects they are a member of", c.user)
	}
	scope := "user:" + user + ",project:" + project
	if w != nil {
		scope = "workload:" + w.reg.ID
	}
	return a.explain(r, c, user, p, a.layersFor(user, project, w), scope), 200, nil
}

// explain is explain's answer for user in project p (nil: none) from
// layers, highest first; reveals are audited under scope. Called with
// a.mu held.
func (a *Agent) explain(r *http.Request, c *caller, user string, p *project, layers []layer, scope string) []explainJSON {
	// Who may see a masked value in clear, by layer: admins every layer;
	// the user their own account layer; a project owner the project's.
	canReveal := func(layer string) bool {
		switch {
		case !wantReveal(r):
			return false
		case c.admin:
			return true
		case layer == layerAccount:
			return user == c.user
		case layer == layerProject:
			return a.projectRole(c, p) == "owner"
		}
		return false
	}
	var revealed []string
	out := []explainJSON{}
	for _, l := range layers {
		for _, lo := range l.leftOut {
			out = append(out, explainJSON{Name: lo.name, Layer: l.name, Overrides: []string{}, LeftOut: lo.reason})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	for _, res := range a.resolve(layers, nil) {
		reveal := canReveal(res.layer)
		e := explainJSON{Name: res.name, Secret: res.secret, Layer: res.layer, Overrides: res.overrides, Cleared: len(res.value) == 0, SecretScope: res.scope}
		if e.Overrides == nil {
			e.Overrides = []string{}
		}
		switch {
		case e.Cleared:
		case masked(res.name, res.secret) && !reveal:
			e.Value, e.Masked = maskText, true
		default:
			e.Value = replyString(r, res.value)
			if masked(res.name, res.secret) {
				revealed = append(revealed, res.name)
			}
		}
		out = append(out, e)
	}
	a.auditReveal(c, scope, revealed)
	return out
}
