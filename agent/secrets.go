package agent

import (
	"bytes"
	"context"
	"encoding/base64"
	"net/http"
	"unicode/utf8"

	"github.com/envlet/envlet/agent/api"
	"github.com/envlet/envlet/fetch"
)

// Secrets (docs/design.md §1): private to a user (s/u/<user>/<NAME>) or shared with
// one project's members (s/p/<project>/<NAME>). A secret record is sealed
// like a variable: a flags byte (flagFile: the value is the base64 of a
// file's bytes), then the value. Workloads reach secrets two ways: a
// variable set --from-secret, resolved per workload, and GetSecret on the
// workload socket.

// maxSecretChars is the most characters a stored secret value may have;
// a file's base64 counts, so a file secret holds at most 6750 bytes.
const maxSecretChars = 9000

// secretScope names whose secrets a request acts on.
type secretScope struct {
	user, project string // exactly one is set
}

func (s secretScope) key(name string) string {
	if s.project != "" {
		return keyProjSecret(s.project, name)
	}
	return keyUserSecret(s.user, name)
}

// String is the scope as the audit log shows it.
func (s secretScope) String() string {
	if s.project != "" {
		return "secret:project:" + s.project
	}
	return "secret:user:" + s.user
}

func (s secretScope) owner() string {
	if s.project != "" {
		return "project " + s.project
	}
	return s.user
}

// set returns the scope's secrets; nil when it has none. Called with a.mu held.
func (s secretScope) set(m *model) varSet {
	if s.project != "" {
		return m.projSecrets[s.project]
	}
	return m.userSecrets[s.user]
}

// checkSecret applies the secret rules: a variable name, no NUL byte, valid
// base64 for a file, at most maxSecretChars characters. Messages give
// sizes, never content.
func checkSecret(name string, value []byte, file bool) error {
	if !validVarName(name) {
		return errorf(CodeInvalidName, "invalid secret name (%d bytes): must match ^[A-Za-z_][A-Za-z0-9_]*$ and be at most %d bytes", len(name), maxNameLen)
	}
	if bytes.IndexByte(value, 0) >= 0 {
		return errorf(CodeInvalidValue, "value of secret %s contains a NUL byte", name)
	}
	if n := utf8.RuneCount(value); n > maxSecretChars {
		return errorf(CodeSecretTooLarge, "secret %s is %d characters, over the limit of %d", name, n, maxSecretChars)
	}
	if file {
		// The decoder skips line breaks; the stored form has none.
		if _, err := base64.StdEncoding.Strict().DecodeString(string(value)); err != nil || bytes.ContainsAny(value, "\r\n") {
			return errorf(CodeInvalidValue, "value of file secret %s is not standard padded base64", name)
		}
	}
	return nil
}

// putSecret stores a secret. mode is as for account variables: create
// fails on an existing name, update on a missing one.
func (a *Agent) putSecret(ctx context.Context, s secretScope, name string, value []byte, file bool, mode varWrite) error {
	if err := checkSecret(name, value, file); err != nil {
		return err
	}
	var flags byte = flagSecret
	if file {
		flags |= flagFile
	}
	key := s.key(name)
	_, err := a.commit(ctx, func(m *model) (fetch.Txn, error) {
		var txn fetch.Txn
		if s.project != "" {
			p := m.liveProject(s.project)
			if p == nil {
				return txn, errorf(CodeProjectNotFound, "project %s does not exist", s.project)
			}
			txn.Conds = append(txn.Conds, fetch.Cond{Key: keyProjMeta(s.project), ModRev: p.metaRev})
		}
		var rev fetch.Revision
		old := s.set(m)[name]
		if old != nil {
			rev = old.rev
		}
		switch {
		case rev != 0 && mode == writeCreate:
			return txn, errorf(CodeAlreadyExists, "secret %s already exists for %s", name, s.owner())
		case rev == 0 && mode == writeUpdate:
			return txn, errorf(CodeNotFound, "secret %s does not exist for %s", name, s.owner())
		}
		what, setting, limit := "private secrets of "+s.user, "private_secret_limit", a.limits().PrivateSecrets
		if s.project != "" {
			what, setting, limit = "secrets of project "+s.project, "project_secret_limit", a.limits().ProjectSecrets
		}
		if err := a.checkGrowth(CodeSecretLimit, what, setting, len(s.set(m)), limit, old, m.scopeBytes(s.user, s.project), len(value)); err != nil {
			return txn, err
		}
		txn.Conds = append(txn.Conds, fetch.Cond{Key: key, ModRev: rev})
		txn.Ops = append(txn.Ops, fetch.Op{Key: key, Value: a.sealVar(key, value, flags)})
		return txn, nil
	})
	return err
}

func (a *Agent) deleteSecret(ctx context.Context, s secretScope, name string) error {
	key := s.key(name)
	_, err := a.commit(ctx, func(m *model) (fetch.Txn, error) {
		v := s.set(m)[name]
		if v == nil {
			return fetch.Txn{}, errorf(CodeNotFound, "secret %s does not exist for %s", clipName(name), s.owner())
		}
		return fetch.Txn{
			Conds: []fetch.Cond{{Key: key, ModRev: v.rev}},
			Ops:   []fetch.Op{{Key: key, Delete: true}},
		}, nil
	})
	return err
}

// secretFor finds the secret a workload of user in project may read under
// name: the user's private secret when the user is a member (or owner) of
// the project — private secrets follow a user only into their projects,
// as account variables do — else the project's. Called with a.mu held.
func (a *Agent) secretFor(user, project, name string) (v *variable, scope string) {
	p := a.model.liveProject(project)
	if p == nil {
		return nil, ""
	}
	if p.isMember(user) {
		if v := a.model.userSecrets[user][name]; v != nil {
			return v, secretScope{user: user}.String()
		}
	}
	if v := a.model.projSecrets[project][name]; v != nil {
		return v, secretScope{project: project}.String()
	}
	return nil, ""
}

// refSecret finds the secret a variable set --from-secret takes, for a
// workload of user in project: in the user's own account layer
// (account), the one secretFor finds; in any other layer (project,
// groups: written by others) only the project's, so that no one but the
// user points a variable at the user's private secret. Called with a.mu
// held.
func (a *Agent) refSecret(account bool, user, project, name string) (v *variable, scope string) {
	if account {
		return a.secretFor(user, project, name)
	}
	if a.model.liveProject(project) == nil {
		return nil, ""
	}
	if v := a.model.projSecrets[project][name]; v != nil {
		return v, secretScope{project: project}.String()
	}
	return nil, ""
}

// storedLayer turns a stored variable set into a resolution layer for a
// workload of user in project. A variable set --from-secret takes the
// value of the secret that layer reaches (refSecret), masked as a secret;
// when there is none it is left out and named in layer.leftOut, as is a
// protected name outside the account layer. Called with a.mu held.
func (a *Agent) storedLayer(name string, set varSet, user, project string) layer {
	l := layer{name: name}
	account := name == layerAccount
	for n, v := range set {
		if !account && a.protected.Has(n) {
			l.leftOut = append(l.leftOut, leftOut{n, protectedReason})
			continue
		}
		if !v.fromRef() {
			l.vars = append(l.vars, layerVar{name: n, value: v.value(), secret: v.secret()})
			continue
		}
		ref := string(v.value())
		s, scope := a.refSecret(account, user, project, ref)
		if s == nil {
			l.leftOut = append(l.leftOut, leftOut{n, missingSecretReason(account, user, project, ref)})
			continue
		}
		l.vars = append(l.vars, layerVar{name: n, value: s.value(), secret: true, scope: scope})
	}
	return l
}

// missingSecretReason says whose secrets a reference was looked up in.
func missingSecretReason(account bool, user, project, ref string) string {
	if account {
		return "from_secret " + ref + ": neither a private secret of " + user + " (as a member of " + project + ") nor a secret of project " + project
	}
	return "from_secret " + ref + ": no secret of project " + project + " (this layer reaches only project " + project + "'s secrets, never a user's private ones)"
}

// secretJSON is a secret as the API shows it. List replies leave Value out.
type secretJSON struct {
	Name   string  `json:"name"`
	Kind   string  `json:"kind"` // text or file
	Size   int     `json:"size"` // characters stored (a file's: its base64)
	Value  *string `json:"value,omitempty"`
	Masked bool    `json:"masked,omitempty"`
	api.Dated
}

func showSecret(r *http.Request, name string, v *variable, withValue, reveal bool) secretJSON {
	out := secretJSON{Name: name, Kind: "text", Size: utf8.RuneCount(v.value())}
	if v.file() {
		out.Kind = "file"
	}
	if withValue {
		s := maskText
		if reveal {
			s = replyString(r, v.value())
		} else {
			out.Masked = true
		}
		out.Value = &s
	}
	return out
}

// secretScopeFor resolves the scope of a secrets request and checks the
// caller's right to it. Private secrets: the owner reads and writes, an
// admin reads. Project secrets: members, owners and admins read and write.
func (a *Agent) secretScopeFor(r *http.Request, c *caller, write bool) (secretScope, error) {
	if r.PathValue("p") != "" {
		name, err := a.projectFor(r, c, "member")
		if err != nil {
			return secretScope{}, err
		}
		return secretScope{project: name}, nil
	}
	u := r.PathValue("user")
	if u == "me" {
		u = c.user
	}
	if !validIdent(u) {
		return secretScope{}, errorf(CodeInvalidRequest, "invalid user name")
	}
	switch {
	case u == c.user:
	case write:
		return secretScope{}, errorf(CodeDenied, "only %s writes the private secrets of %s", u, u)
	case !c.admin:
		return secretScope{}, errorf(CodeDenied, "%s may not read the private secrets of %s", c.user, u)
	}
	return secretScope{user: u}, nil
}

func (a *Agent) apiListSecrets(r *http.Request, c *caller) (any, int, error) {
	s, err := a.secretScopeFor(r, c, false)
	if err != nil {
		return nil, 0, err
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	set := s.set(a.model)
	out := []secretJSON{}
	for _, n := range set.sortedNames() {
		x := showSecret(r, n, set[n], false, false)
		x.Dated = a.model.dates[s.key(n)]
		out = append(out, x)
	}
	return out, 200, nil
}

func (a *Agent) apiGetSecret(r *http.Request, c *caller) (any, int, error) {
	s, err := a.secretScopeFor(r, c, false)
	if err != nil {
		return nil, 0, err
	}
	name := r.PathValue("name")
	reveal := wantReveal(r)
	a.mu.RLock()
	defer a.mu.RUnlock()
	v := s.set(a.model)[name]
	if v == nil {
		return nil, 0, errorf(CodeNotFound, "secret %s does not exist for %s", clipName(name), s.owner())
	}
	if reveal {
		a.audit.write(auditRecord{Action: "reveal", Scope: s.String(), Name: name, HMAC: a.audit.sum(v.value()), Socket: "admin"}, &c.peer, c.user)
	}
	out := showSecret(r, name, v, true, reveal)
	out.Dated = a.model.dates[s.key(name)]
	return out, 200, nil
}

// secretBody is the body of a secret write.
type secretBody struct {
	Value *lockedValue `json:"value"` // in locked memory until the request is done (jsonstr.go)
	File  bool         `json:"file"`  // value is the base64 of a file's bytes
}

func (a *Agent) apiPutSecret(mode varWrite) handler {
	return func(r *http.Request, c *caller) (any, int, error) {
		s, err := a.secretScopeFor(r, c, true)
		if err != nil {
			return nil, 0, err
		}
		var b secretBody
		if err := decodeBody(r, &b); err != nil {
			return nil, 0, err
		}
		if b.Value == nil {
			return nil, 0, errorf(CodeInvalidRequest, "value is missing")
		}
		value := b.Value.Bytes() // freed with the request
		name := r.PathValue("name")
		if err := a.putSecret(r.Context(), s, name, value, b.File, mode); err != nil {
			return nil, 0, err
		}
		action := map[varWrite]string{writeCreate: "create", writeUpdate: "update", writeUpsert: "set"}[mode]
		a.audit.write(auditRecord{Action: action, Scope: s.String(), Name: name, HMAC: a.audit.sum(value), Socket: "admin"}, &c.peer, c.user)
		a.mu.RLock()
		defer a.mu.RUnlock()
		status := 200
		if mode == writeCreate {
			status = 201
		}
		if v := s.set(a.model)[name]; v != nil {
			out := showSecret(r, name, v, false, false)
			out.Dated = a.model.dates[s.key(name)]
			return out, status, nil
		}
		return secretJSON{Name: name}, status, nil
	}
}

func (a *Agent) apiDeleteSecret(r *http.Request, c *caller) (any, int, error) {
	s, err := a.secretScopeFor(r, c, true)
	if err != nil {
		return nil, 0, err
	}
	name := r.PathValue("name")
	if err := a.deleteSecret(r.Context(), s, name); err != nil {
		return nil, 0, err
	}
	a.audit.write(auditRecord{Action: "delete", Scope: s.String(), Name: name, Socket: "admin"}, &c.peer, c.user)
	return nil, http.StatusNoContent, nil
}

// apiAuditHMAC computes the audit HMAC of a value an admin holds, to grep
// the audit log for where it was written or served.
func (a *Agent) apiAuditHMAC(r *http.Request, c *caller) (any, int, error) {
	if !c.admin {
		return nil, 0, errorf(CodeDenied, "only admins compute audit HMACs")
	}
	var b struct {
		Value *lockedValue `json:"value"`
	}
	if err := decodeBody(r, &b); err != nil {
		return nil, 0, err
	}
	if b.Value == nil {
		return nil, 0, errorf(CodeInvalidRequest, "value is missing")
	}
	value := b.Value.Bytes() // freed with the request
	sum := a.audit.sum(value)
	a.audit.write(auditRecord{Action: "hmac", HMAC: sum, Socket: "admin"}, &c.peer, c.user)
	return map[string]string{"hmac": sum}, 200, nil
}
