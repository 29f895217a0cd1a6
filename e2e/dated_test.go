package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// dates is the part of a listed thing that says when it was written.
type dates struct {
	Name      string `json:"name"`
	ID        string `json:"id"`
	CreatedAt string `json:"created_at"`
	UpdatedAt string `json:"updated_at"`
	UpdatedBy string `json:"updated_by"`
}

// TestDatedRecordsCLI: what the CLI lists carries created_at, updated_at
// and updated_by, written by the real agent into its real store (the
// local one, or etcd under ENVLET_E2E_BACKEND=etcd), and they survive a
// restart, which re-reads them from the store. An admin writing a user's
// variable is named as its writer; the user's update keeps created_at.
func TestDatedRecordsCLI(t *testing.T) {
	a := startAgent(t, "")
	uid := freeUID(t)
	user := uidName(uid)
	list := func(uid uint32, args ...string) []dates {
		t.Helper()
		r := a.cliAs(uid, append(args, "--json")...)
		if r.code != 0 {
			t.Fatalf("envlet %v: %s", args, r)
		}
		var out []dates
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
			t.Fatalf("envlet %v: %v: %s", args, err, r.stdout)
		}
		return out
	}
	one := func(ds []dates, what string) dates {
		t.Helper()
		if len(ds) != 1 {
			t.Fatalf("%s: %+v, want one", what, ds)
		}
		return ds[0]
	}
	fresh := func(d dates, what, by string) {
		t.Helper()
		tm, err := time.Parse(time.RFC3339, d.CreatedAt)
		if err != nil || !strings.HasSuffix(d.CreatedAt, "Z") || d.UpdatedAt < d.CreatedAt || d.UpdatedBy != by {
			t.Errorf("%s: %+v, want created_at in RFC 3339 UTC, updated_at not before it, updated_by %s", what, d, by)
		}
		if time.Since(tm) > time.Hour || time.Until(tm) > time.Minute {
			t.Errorf("%s: created_at %s is not about now", what, d.CreatedAt)
		}
	}

	a.cli("project", "create", "fraud")
	a.cli("project", "add-member", "fraud", user)
	a.cli("group", "create", "base")
	a.cli("env", "set", "--user", user, "A", "1") // an admin writes the user's variable
	if r := a.cliAs(uid, "secret", "create", "S", "s-value"); r.code != 0 {
		t.Fatal(r)
	}
	a.register(map[string]any{"id": "w", "user": user, "project": "fraud", "match": map[string]any{"uid": uid}})

	proj := one(list(0, "project", "list"), "project list")
	fresh(proj, "project", "root")
	fresh(one(list(0, "group", "list"), "group list"), "group", "root")
	secret := one(list(uid, "secret", "list"), "secret list")
	fresh(secret, "secret", user)
	fresh(one(list(0, "workload", "list"), "workload list"), "registration", "root")
	created := one(list(uid, "env", "list"), "env list")
	fresh(created, "account variable written by an admin", "root")

	// The table shows the secret's creation date.
	if r := a.cliAs(uid, "secret", "list"); r.code != 0 || !strings.Contains(r.stdout, "CREATED") || !strings.Contains(r.stdout, secret.CreatedAt) {
		t.Errorf("secret list: %s, want a CREATED column with %s", r, secret.CreatedAt)
	}

	// The user's own update, a second later: created_at stays.
	for time.Now().UTC().Format(time.RFC3339) == created.CreatedAt {
		time.Sleep(20 * time.Millisecond)
	}
	if r := a.cliAs(uid, "env", "update", "A", "2"); r.code != 0 {
		t.Fatal(r)
	}
	updated := one(list(uid, "env", "list"), "env list after update")
	if updated.CreatedAt != created.CreatedAt || updated.UpdatedBy != user || updated.UpdatedAt <= created.UpdatedAt {
		t.Errorf("after the user's update: %+v (before %+v), want created_at kept, updated_at later, updated_by %s", updated, created, user)
	}

	// On etcd the dates are records of their own beside what they date.
	if where, dump := a.etcdDump(); where != "" && !strings.Contains(dump, "d/u/"+user+"/v/A") {
		t.Errorf("%s has no d/u/%s/v/A record", where, user)
	} else if e2eBackend == "etcd" && where == "" {
		t.Errorf("ENVLET_E2E_BACKEND=etcd but the agent is not on etcd")
	}

	// A restart reads them back from the store.
	a.restart()
	if got := one(list(uid, "env", "list"), "env list after restart"); got != updated {
		t.Errorf("after a restart: %+v, want %+v", got, updated)
	}
	if got := one(list(uid, "secret", "list"), "secret list after restart"); got != secret {
		t.Errorf("secret after a restart: %+v, want %+v", got, secret)
	}
	if got := one(list(0, "project", "list"), "project list after restart"); got.CreatedAt != proj.CreatedAt {
		t.Errorf("project after a restart: %+v, want %+v", got, proj)
	}
}
