package agent

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/envlet/envlet/agent/api"
	"github.com/envlet/envlet/fetch"
)

// datedOf decodes a reply's dates and checks each present one is RFC 3339
// in UTC.
func datedOf(t *testing.T, what string, body []byte) api.Dated {
	t.Helper()
	var d api.Dated
	if err := json.Unmarshal(body, &d); err != nil {
		t.Fatalf("%s: %v: %s", what, err, body)
	}
	for _, s := range []string{d.CreatedAt, d.UpdatedAt} {
		if s == "" {
			continue
		}
		if tm, err := time.Parse(time.RFC3339, s); err != nil || !strings.HasSuffix(s, "Z") || tm.Location() != time.UTC {
			t.Errorf("%s: date %q is not RFC 3339 in UTC", what, s)
		}
	}
	return d
}

// TestDatedRecords: every kind of stored thing gets created_at, updated_at
// and updated_by; an update keeps created_at and names its own writer (an
// admin writing a user's variable is the admin); a cascade is dated by
// whoever caused it; a delete takes the dates with it.
func TestDatedRecords(t *testing.T) {
	a := apiAgent(t)
	h := a.adminHandler()
	root := &caller{peer: peer{uid: 0}, user: "root", admin: true}
	alice := &caller{peer: peer{uid: 4242}, user: "alice"}
	before := time.Now().UTC().Truncate(time.Second)
	do := func(c *caller, method, target, body string, status int) []byte {
		t.Helper()
		w := call(h, c, method, target, []byte(body))
		if w.Code != status {
			t.Fatalf("%s %s: status %d, want %d: %s", method, target, w.Code, status, w.Body)
		}
		return w.Body.Bytes()
	}
	fresh := func(what string, d api.Dated, by string) {
		t.Helper()
		if d.CreatedAt == "" || d.UpdatedAt != d.CreatedAt || d.UpdatedBy != by {
			t.Errorf("%s: dates %+v, want created_at = updated_at, updated_by %s", what, d, by)
		}
		if tm, _ := time.Parse(time.RFC3339, d.CreatedAt); tm.Before(before) {
			t.Errorf("%s: created_at %s is before the test began (%s)", what, d.CreatedAt, before)
		}
	}

	do(root, "POST", "/v1/projects", `{"name":"fraud"}`, 201)
	do(root, "POST", "/v1/projects/fraud/members", `{"user":"alice","owner":true}`, 200)
	fresh("group", datedOf(t, "group", do(root, "POST", "/v1/groups", `{"name":"base"}`, 201)), "root")
	fresh("group variable", datedOf(t, "group var", do(root, "PUT", "/v1/groups/base/env/G", `{"value":"g"}`, 200)), "root")
	do(root, "POST", "/v1/groups/base/assign", `{"projects":["fraud"]}`, 200)
	fresh("project variable", datedOf(t, "project var", do(alice, "PUT", "/v1/projects/fraud/env/P", `{"value":"p"}`, 200)), "alice")
	fresh("project secret", datedOf(t, "project secret", do(alice, "PUT", "/v1/projects/fraud/secrets/PS", `{"value":"s"}`, 200)), "alice")
	fresh("private secret", datedOf(t, "secret", do(alice, "PUT", "/v1/users/me/secrets/S", `{"value":"s"}`, 200)), "alice")
	fresh("registration", func() api.Dated {
		do(root, "POST", "/v1/workloads", `{"id":"w1","user":"alice","project":"fraud","match":{"uid":4242}}`, 201)
		var ws []api.Workload
		json.Unmarshal(do(root, "GET", "/v1/workloads", "", 200), &ws)
		if len(ws) != 1 {
			t.Fatalf("workloads: %+v", ws)
		}
		return ws[0].Dated
	}(), "root")

	// An admin writes alice's variable: the admin is its writer.
	created := datedOf(t, "account var", do(root, "POST", "/v1/users/alice/env/A", `{"value":"1"}`, 201))
	fresh("account variable written by an admin", created, "root")
	// Dates have whole seconds: wait for the next one, so the update's
	// updated_at can be told from created_at.
	for time.Now().UTC().Format(time.RFC3339) == created.CreatedAt {
		time.Sleep(10 * time.Millisecond)
	}
	updated := datedOf(t, "account var update", do(alice, "PATCH", "/v1/users/me/env/A", `{"value":"2"}`, 200))
	if updated.CreatedAt != created.CreatedAt || updated.UpdatedBy != "alice" || updated.UpdatedAt <= created.CreatedAt {
		t.Errorf("update: %+v after %+v: want created_at kept, updated_at later, updated_by alice", updated, created)
	}
	var list []api.Variable
	json.Unmarshal(do(alice, "GET", "/v1/users/me/env", "", 200), &list)
	if len(list) != 1 || list[0].Dated != updated {
		t.Errorf("list: %+v, want the dates %+v", list, updated)
	}

	// Deleting the group takes it out of fraud's order: fraud's record is
	// written by the admin who deleted the group.
	p := datedOf(t, "project", do(alice, "GET", "/v1/projects/fraud", "", 200))
	do(root, "DELETE", "/v1/groups/base", "", 204)
	p2 := datedOf(t, "project after cascade", do(alice, "GET", "/v1/projects/fraud", "", 200))
	if p2.CreatedAt != p.CreatedAt || p2.UpdatedBy != "root" {
		t.Errorf("project after the group's delete: %+v (before %+v), want created_at kept, updated_by root", p2, p)
	}

	// A delete removes the dates too: nothing is left under d/ for what
	// is gone.
	do(root, "DELETE", "/v1/projects/fraud", "", 204)
	do(alice, "DELETE", "/v1/users/me/env/A", "", 204)
	snap, err := a.backend.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, kv := range snap.KVs {
		if strings.HasPrefix(kv.Key, "d/") {
			left = append(left, kv.Key)
		}
	}
	if strings.Join(left, " ") != "d/s/u/alice/S d/w/w1" {
		t.Errorf("dated records left: %q, want only the private secret's and the registration's", left)
	}
}

// TestDatedOldRecord: a record written before dates were kept (no d/
// record, as the previous agent wrote it) loads and shows no dates, not a
// made-up one; its next write sets updated_at and updated_by and leaves
// created_at unknown.
func TestDatedOldRecord(t *testing.T) {
	a := apiAgent(t)
	h := a.adminHandler()
	alice := &caller{peer: peer{uid: 4242}, user: "alice"}
	// The previous agent's write: the variable record alone.
	key := keyAcctVar("alice", "OLD")
	rev, err := a.backend.Commit(context.Background(), fetch.Txn{
		Conds: []fetch.Cond{{Key: key}},
		Ops:   []fetch.Op{{Key: key, Value: a.sealVar(key, []byte("v"), 0)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.waitRev(context.Background(), rev); err != nil {
		t.Fatal(err)
	}
	w := call(h, alice, "GET", "/v1/users/me/env/OLD", nil)
	if w.Code != 200 || strings.Contains(w.Body.String(), "_at") || strings.Contains(w.Body.String(), "updated_by") {
		t.Fatalf("old record: %d %s, want no dates", w.Code, w.Body)
	}
	w = call(h, alice, "PATCH", "/v1/users/me/env/OLD", []byte(`{"value":"w"}`))
	d := datedOf(t, "old record updated", w.Body.Bytes())
	if w.Code != 200 || d.CreatedAt != "" || d.UpdatedAt == "" || d.UpdatedBy != "alice" {
		t.Errorf("old record after its next write: %d %+v, want updated_at and updated_by, created_at unknown", w.Code, d)
	}
}

// TestDatedNotServed: the dates stay out of what a workload is served,
// and a write that changes only dates (the same value put again) leaves
// the served frame byte for byte the same.
func TestDatedNotServed(t *testing.T) {
	a := apiAgent(t)
	h := a.adminHandler()
	root := &caller{peer: peer{uid: 0}, user: "root", admin: true}
	for _, s := range []struct{ method, target, body string }{
		{"POST", "/v1/projects", `{"name":"fraud"}`},
		{"POST", "/v1/projects/fraud/members", `{"user":"alice"}`},
		{"PUT", "/v1/projects/fraud/env/P", `{"value":"p"}`},
		{"POST", "/v1/workloads", `{"id":"w1","user":"alice","project":"fraud","match":{"uid":4242}}`},
	} {
		if w := call(h, root, s.method, s.target, []byte(s.body)); w.Code >= 300 {
			t.Fatalf("%s %s: %d %s", s.method, s.target, w.Code, w.Body)
		}
	}
	frame := func() []byte {
		a.mu.RLock()
		defer a.mu.RUnlock()
		buf := a.envFrame(a.workloads["w1"])
		defer buf.Free()
		return append([]byte(nil), buf.Bytes()...)
	}
	first := frame()
	a.mu.RLock()
	d := a.model.dates[keyProjVar("fraud", "P")]
	rev := a.workloads["w1"].envRev
	a.mu.RUnlock()
	if d.UpdatedAt == "" || strings.Contains(string(first), d.UpdatedAt) || strings.Contains(string(first), "root") {
		t.Fatalf("dates %+v: missing, or in the served frame %q", d, first)
	}
	if w := call(h, root, "PUT", "/v1/projects/fraud/env/P", []byte(`{"value":"p"}`)); w.Code != 200 {
		t.Fatal(w.Code, w.Body)
	}
	a.mu.RLock()
	rev2 := a.workloads["w1"].envRev
	a.mu.RUnlock()
	if got := frame(); string(got[20:]) != string(first[20:]) || rev2 != rev {
		t.Errorf("the same value put again changed what is served: env revision %d → %d", rev, rev2)
	}
}
