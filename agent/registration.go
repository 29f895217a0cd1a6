package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/envlet/envlet/agent/api"
	"github.com/envlet/envlet/cache"
	"github.com/envlet/envlet/fetch"
)

// Registration is the workload document of docs/design.md §4, the same in
// workloads.d/*.json, `envlet workload register` and POST /v1/workloads.
type Registration struct {
	ID        string            `json:"id"`
	User      string            `json:"user"`
	Project   string            `json:"project"`
	Match     Match             `json:"match"`
	Runtime   map[string]string `json:"runtime,omitempty"`
	Execution map[string]string `json:"execution,omitempty"`
	Mount     bool              `json:"mount,omitempty"`

	// IssuedToken is the token the agent issued for "match": {"token":
	// true}, kept in the sealed record of an API registration so it
	// survives a restart. Only the agent sets it: a registration document
	// that holds one is refused (admin API, workloads.d).
	IssuedToken string `json:"issued_token,omitempty"`

	// wipe holds the value strings parseRegistration decoded, zeroed by
	// wipeValues once they are copied to locked memory (wipe.go).
	wipe []string
}

// wipeValues zeroes the values parseRegistration decoded. The registration
// must not be read for its values after.
func (r *Registration) wipeValues() {
	for _, s := range r.wipe {
		wipeString(s)
	}
	r.wipe = nil
}

// Match says how to recognise a workload's processes; every field given
// must match.
type Match struct {
	UID         *uint32 `json:"uid,omitempty"`
	GID         *uint32 `json:"gid,omitempty"`
	SystemdUnit string  `json:"systemd_unit,omitempty"`
	Cgroup      string  `json:"cgroup,omitempty"`
	ContainerID string  `json:"container_id,omitempty"`
	PodUID      string  `json:"pod_uid,omitempty"`
	Token       bool    `json:"token,omitempty"`
}

const maxRegistrationBytes = 1 << 20

// parseRegistration decodes and checks a registration document. Unknown
// fields are errors so a misspelt "exectuion" is not silently dropped.
func parseRegistration(b []byte) (*Registration, error) {
	if len(b) > maxRegistrationBytes {
		return nil, errorf(CodeInvalidRequest, "registration is %d bytes, over the limit of %d", len(b), maxRegistrationBytes)
	}
	var r Registration
	if err := strictUnmarshal(b, &r); err != nil {
		var e *Error
		if errors.As(err, &e) {
			return nil, e // a value JSON would change (jsonstr.go)
		}
		if errors.Is(err, errTrailing) {
			return nil, errorf(CodeInvalidRequest, "decode registration: trailing data after the object")
		}
		return nil, errorf(CodeInvalidRequest, "decode registration: %s", jsonErrText(err))
	}
	r.wipe = valueStrings(&r)
	if err := r.check(); err != nil {
		r.wipeValues()
		return nil, err
	}
	return &r, nil
}

// jsonErrText describes a JSON error without quoting the input: a syntax
// error's text may hold part of a value.
func jsonErrText(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q: want %s", te.Field, te.Type)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "unexpected end of input"
	}
	msg := err.Error()
	// "json: unknown field \"x\"" names a field, never a value.
	if len(msg) > 200 {
		msg = msg[:200]
	}
	return msg
}

func (r *Registration) check() error {
	switch {
	case !validIdent(r.ID):
		return errorf(CodeInvalidRequest, "registration id is missing or invalid (1-128 of A-Z a-z 0-9 . _ - @)")
	case !validIdent(r.User):
		return errorf(CodeInvalidRequest, "registration %s: user is missing or invalid", r.ID)
	case !validIdent(r.Project):
		return errorf(CodeInvalidRequest, "registration %s: project is missing or invalid", r.ID)
	}
	m := r.Match
	if m.UID == nil && m.GID == nil && m.SystemdUnit == "" && m.Cgroup == "" && m.ContainerID == "" && m.PodUID == "" && !m.Token {
		return errorf(CodeInvalidRequest, "registration %s: match names nothing (want uid, gid, systemd_unit, cgroup, container_id, pod_uid or token)", r.ID)
	}
	if err := m.check(r.ID); err != nil {
		return err
	}
	if r.IssuedToken != "" && (!m.Token || !validToken([]byte(r.IssuedToken))) {
		return errorf(CodeInvalidRequest, "registration %s: issued_token is malformed or without token: true", r.ID)
	}
	for layer, vars := range map[string]map[string]string{"runtime": r.Runtime, "execution": r.Execution} {
		for n, v := range vars {
			if !validVarName(n) {
				return errorf(CodeInvalidName, "registration %s: %s variable name invalid (%d bytes)", r.ID, layer, len(n))
			}
			if len(v) > 1<<20 || bytes.IndexByte([]byte(v), 0) >= 0 {
				return errorf(CodeInvalidValue, "registration %s: value of %s %s has a NUL byte or is over 1 MiB", r.ID, layer, n)
			}
		}
	}
	return nil
}

// check validates the cgroup-based fields (identity.go matches them).
func (m *Match) check(id string) error {
	switch {
	case m.SystemdUnit != "" && !validMatchUnit(m.SystemdUnit):
		return errorf(CodeInvalidRequest, "registration %s: systemd_unit must be a unit name ending in .service, .scope or .slice", id)
	case m.Cgroup != "" && !validMatchCgroup(m.Cgroup):
		return errorf(CodeInvalidRequest, "registration %s: cgroup must be an absolute, clean path other than / (e.g. /system.slice/train.service)", id)
	case m.ContainerID != "" && !validMatchContainerID(m.ContainerID):
		return errorf(CodeInvalidRequest, "registration %s: container_id must be 12 to 64 lowercase hex digits", id)
	case m.PodUID != "" && !validPodUID(m.PodUID):
		return errorf(CodeInvalidRequest, "registration %s: pod_uid must be a pod's metadata.uid (a lowercase UUID, or 32 hex digits for a static pod)", id)
	}
	return nil
}

// Workload sources.
const (
	sourceAPI  = "api"
	sourceFile = "file"
)

// workload is a registration as the agent serves it: its own layers in
// locked memory (ownlayer.go) and a digest of what it was last resolved to;
// its environment is merged when it asks (resolve.go).
type workload struct {
	reg       Registration // Runtime and Execution emptied: the values live in runtime/execution
	source    string
	path      string     // for file registrations
	dates     api.Dated  // for registrations not in the store (workloads.d, runs): their dates (dated.go)
	runtime   *cache.Buf // own layers (ownlayer.go); nil when empty
	execution *cache.Buf

	digest    uint64         // keyed digest of the Env body it receives (resolve.go)
	hasDigest bool           // digest is set: resolved at least once
	envRev    fetch.Revision // revision at which the resolved env last changed
	servedRev atomic.Int64   // revision last served

	token     *cache.Buf // the issued token (hex), when the match asks for one
	tokenFile string     // where it was written
}

// free zeroes w's locked memory. The names of its own layers stay
// interned: releaseOwn gives them back when the agent goes on.
// noteServed records that w was served its environment as of rev; the
// revision only moves forward (a mount writer may finish after a newer
// request was served).
func (w *workload) noteServed(rev fetch.Revision) {
	for {
		old := w.servedRev.Load()
		if int64(rev) <= old || w.servedRev.CompareAndSwap(old, int64(rev)) {
			return
		}
	}
}

func (w *workload) free() {
	w.runtime.Free()
	w.execution.Free()
	w.token.Free()
}

// releaseOwn frees w's own layers and gives back their names. Called with
// a.mu held for writing.
func (a *Agent) releaseOwn(w *workload) {
	a.dropOwn(w.runtime)
	a.dropOwn(w.execution)
	w.runtime, w.execution = nil, nil
}

// putWorkload adds or replaces a registration. Called with a.mu held. A file
// registration may not take an id the API holds, and the reverse. A file
// registration is resolved here; an API one (from apply) by the
// resolveTouched that follows.
func (a *Agent) putWorkload(r *Registration, source string) error {
	if old := a.workloads[r.ID]; old != nil && old.source != source {
		return errorf(CodeWorkloadExists, "workload %s is already registered (%s)", r.ID, old.source)
	}
	if source == sourceFile && r.IssuedToken != "" {
		return errorf(CodeInvalidRequest, "registration %s: issued_token is set by the agent, not in a registration file", r.ID)
	}
	w := &workload{source: source}
	w.reg = *r
	// The copy keeps no decoded value strings: they are wiped below, and a
	// reference here would keep every one reachable for the workload's life.
	w.reg.Runtime, w.reg.Execution, w.reg.IssuedToken, w.reg.wipe = nil, nil, "", nil
	old := a.workloads[r.ID]
	if old != nil && old.tokenFile != "" && !r.Match.Token {
		a.revokeToken(old)
	}
	if err := a.setupToken(w, r.IssuedToken); err != nil {
		return err
	}
	w.runtime, w.execution = a.ownVars(r.Runtime), a.ownVars(r.Execution)
	r.wipeValues() // in locked memory now
	if old != nil {
		w.servedRev.Store(old.servedRev.Load())
		// What it received: resolution tells a change of the
		// environment from a registration put again unchanged.
		w.digest, w.hasDigest, w.envRev = old.digest, old.hasDigest, old.envRev
		a.index.remove(old)
		a.releaseOwn(old)
		old.free()
	}
	a.workloads[r.ID] = w
	a.index.add(w)
	if source == sourceAPI {
		// Put by apply, from a batch or a full read of the store: its
		// resolveTouched resolves w once the whole batch is in, at its
		// revision (resolving here too would do it twice, the first time
		// at the revision before).
		return nil
	}
	a.resolveWorkload(w)
	return nil
}

// removeWorkload drops a registration of the given source. Called with a.mu held.
func (a *Agent) removeWorkload(id, source string) {
	if w := a.workloads[id]; w != nil && w.source == source {
		a.afterRemove(w)
		a.revokeToken(w)
		a.releaseOwn(w)
		w.free()
		a.index.remove(w)
		delete(a.workloads, id)
	}
}
