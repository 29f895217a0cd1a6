package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

// revision is the store's revision as `envlet status` reports it: a
// refused request must leave it where it was.
func (a *agentProc) revision() int64 {
	a.t.Helper()
	var st struct {
		Revision int64 `json:"revision"`
	}
	if err := json.Unmarshal([]byte(a.cli("status", "--json")), &st); err != nil {
		a.t.Fatal(err)
	}
	return st.Revision
}

// explainMap runs explain --json as root and indexes it by name.
func (a *agentProc) explainMap(args ...string) map[string]explained {
	a.t.Helper()
	var got []explained
	if err := json.Unmarshal([]byte(a.cli(append([]string{"explain", "--json"}, args...)...)), &got); err != nil {
		a.t.Fatal(err)
	}
	by := map[string]explained{}
	for _, e := range got {
		by[e.Name] = e
	}
	return by
}

const groupDefaults = `PATH = /usr/bin:/bin
OVER_PLATFORM = platform
G_CLEARS = platform`

// setupGroups: project fraud with groups g1, g2, g3 in that order, a
// variable in every position between the layers, and alice (uid a.uid("w1")) a
// member with a workload.
func setupGroups(t *testing.T) *agentProc {
	a := startAgent(t, groupDefaults)
	a.cli("project", "create", "fraud")
	a.cli("project", "add-member", "fraud", "alice")
	for _, g := range []string{"g1", "g2", "g3"} {
		a.cli("group", "create", g)
		a.cli("group", "set", g, "IN_ALL3", "from-"+g)
	}
	a.cli("group", "set", "g1", "ONLY_G1", "one")
	a.cli("group", "set", "g1", "G1_G2", "from-g1")
	a.cli("group", "set", "g2", "G1_G2", "from-g2")
	a.cli("group", "set", "g1", "OVER_PLATFORM", "from-g1")
	a.cli("group", "set", "g3", "PROJ_OVER_G", "from-g3")
	a.cli("group", "set", "g2", "ACCT_OVER_G", "from-g2")
	a.cli("group", "set", "g1", "RT_OVER_G", "from-g1")
	a.cli("group", "set", "g3", "EXEC_OVER_G", "from-g3")
	a.cli("group", "set", "g2", "G_CLEARS", "")
	a.cli("group", "set", "g1", "PROJ_CLEARS", "from-g1")
	a.cli("project", "env", "set", "fraud", "PROJ_OVER_G", "project")
	a.cli("project", "env", "set", "fraud", "PROJ_CLEARS", "")
	a.cli("env", "set", "--user", "alice", "ACCT_OVER_G", "account")
	a.cli("project", "groups", "fraud", "g1", "g2", "g3")
	a.register(map[string]any{
		"id": "w1", "user": "alice", "project": "fraud", "match": map[string]any{"uid": a.uid("w1")},
		"runtime":   map[string]string{"RT_OVER_G": "runtime"},
		"execution": map[string]string{"EXEC_OVER_G": "exec"},
	})
	return a
}

// checkEnv compares a launched environment with want ("" = absent).
func checkEnv(t *testing.T, env map[string]string, want map[string]string) {
	t.Helper()
	for name, w := range want {
		got, ok := env[name]
		switch {
		case w == "" && ok:
			t.Errorf("%s = %q, want it absent", name, got)
		case w != "" && got != w:
			t.Errorf("%s = %q (present %v), want %q", name, got, ok, w)
		}
	}
}

func TestGroupPrecedence(t *testing.T) {
	a := setupGroups(t)
	env, r := a.launchEnv(a.uid("w1"), a.uid("w1"), "G_CLEARS=image")
	if r.code != 0 {
		t.Fatalf("launch: %s", r)
	}
	checkEnv(t, env, map[string]string{
		"ONLY_G1":       "one",     // a group alone
		"IN_ALL3":       "from-g3", // the last group wins
		"G1_G2":         "from-g2", // a later group beats an earlier one
		"OVER_PLATFORM": "from-g1", // any group beats the platform
		"PROJ_OVER_G":   "project", // the project beats every group
		"ACCT_OVER_G":   "account", // account beats groups
		"RT_OVER_G":     "runtime", // runtime beats groups
		"EXEC_OVER_G":   "exec",    // execution beats groups
		"G_CLEARS":      "",        // an empty group value clears platform and image
		"PROJ_CLEARS":   "",        // an empty project value clears a group's
	})

	// explain names the winner and every loser, in order.
	by := a.explainMap("--workload", "w1")
	for _, tt := range []struct {
		name, layer string
		overrides   []string
	}{
		{"IN_ALL3", "group:g3", []string{"group:g2", "group:g1"}},
		{"G1_G2", "group:g2", []string{"group:g1"}},
		{"ONLY_G1", "group:g1", nil},
		{"OVER_PLATFORM", "group:g1", []string{"platform"}},
		{"PROJ_OVER_G", "project", []string{"group:g3"}},
		{"ACCT_OVER_G", "account", []string{"group:g2"}},
		{"RT_OVER_G", "runtime", []string{"group:g1"}},
		{"EXEC_OVER_G", "execution", []string{"group:g3"}},
		{"G_CLEARS", "group:g2", []string{"platform"}},
	} {
		e := by[tt.name]
		if e.Layer != tt.layer || strings.Join(e.Overrides, ",") != strings.Join(tt.overrides, ",") {
			t.Errorf("explain %s: layer %s overrides %v, want %s %v", tt.name, e.Layer, e.Overrides, tt.layer, tt.overrides)
		}
	}
	// The text form shows the conflict too.
	text := a.cli("explain", "--workload", "w1")
	if !strings.Contains(text, "group:g3") || !strings.Contains(text, "group:g2,group:g1") {
		t.Errorf("explain text does not show the group conflict:\n%s", text)
	}

	// Reordering the groups changes the winner at the next launch.
	a.cli("project", "groups", "fraud", "g3", "g2", "g1")
	env, _ = a.launchEnv(a.uid("w1"), a.uid("w1"))
	checkEnv(t, env, map[string]string{"IN_ALL3": "from-g1", "G1_G2": "from-g1"})
	if e := a.explainMap("--workload", "w1")["IN_ALL3"]; e.Layer != "group:g1" || strings.Join(e.Overrides, ",") != "group:g2,group:g3" {
		t.Errorf("after reorder, explain IN_ALL3: %+v", e)
	}
}

// TestGroupChanges: a change to a group reaches the next launch of every
// workload of every assigned project, with no re-registration.
func TestGroupChanges(t *testing.T) {
	a := setupGroups(t)
	a.cli("project", "create", "ml")
	a.register(map[string]any{"id": "w2", "user": "bob", "project": "ml", "match": map[string]any{"uid": a.uid("w2")}})
	a.cli("group", "assign", "g1", "ml")
	a.cli("group", "assign", "g1", "ml") // again: keeps its place, changes nothing
	env, _ := a.launchEnv(a.uid("w2"), a.uid("w2"))
	checkEnv(t, env, map[string]string{"ONLY_G1": "one", "IN_ALL3": "from-g1"})

	a.cli("group", "set", "g1", "ONLY_G1", "changed")
	for _, uid := range []uint32{a.uid("w1"), a.uid("w2")} {
		env, _ = a.launchEnv(uid, uid)
		checkEnv(t, env, map[string]string{"ONLY_G1": "changed"})
	}
	a.cli("group", "unset", "g1", "ONLY_G1")
	env, _ = a.launchEnv(a.uid("w1"), a.uid("w1"))
	checkEnv(t, env, map[string]string{"ONLY_G1": ""})

	// assign puts a group last: g1 now beats g3 in ml's order [g1] → [g1, g3].
	a.cli("group", "assign", "g3", "ml")
	env, _ = a.launchEnv(a.uid("w2"), a.uid("w2"))
	checkEnv(t, env, map[string]string{"IN_ALL3": "from-g3"})

	a.cli("group", "unassign", "g3", "ml", "fraud")
	env, _ = a.launchEnv(a.uid("w1"), a.uid("w1"))
	checkEnv(t, env, map[string]string{"IN_ALL3": "from-g2", "PROJ_OVER_G": "project", "EXEC_OVER_G": "exec"})
	// Unassigning a group a project does not have fails and changes nothing.
	rev := a.revision()
	if r := a.cliAs(0, "group", "unassign", "g3", "ml"); r.code == 0 || !strings.Contains(r.stderr, "NOT_FOUND") {
		t.Errorf("unassign of an unassigned group: %s", r)
	}
	if a.revision() != rev {
		t.Error("a refused unassign changed the store")
	}

	// Deleting a group removes it from every project's order at once.
	a.cli("group", "delete", "g1")
	var p struct{ Groups []string }
	json.Unmarshal([]byte(a.cli("project", "show", "fraud", "--json")), &p)
	if strings.Join(p.Groups, ",") != "g2" {
		t.Errorf("after deleting g1, fraud's groups = %v, want [g2]", p.Groups)
	}
	json.Unmarshal([]byte(a.cli("project", "show", "ml", "--json")), &p)
	if len(p.Groups) != 0 {
		t.Errorf("after deleting g1, ml's groups = %v, want none", p.Groups)
	}
	env, _ = a.launchEnv(a.uid("w1"), a.uid("w1"))
	checkEnv(t, env, map[string]string{"G1_G2": "from-g2", "OVER_PLATFORM": "platform", "RT_OVER_G": "runtime"})
	// A group created again under the same name starts empty and unassigned.
	a.cli("group", "create", "g1")
	if out := a.cli("group", "show", "g1", "--json"); strings.Contains(out, "ONLY_G1") || strings.Contains(out, "fraud") {
		t.Errorf("a re-created group kept old state: %s", out)
	}
}

func TestGroupErrors(t *testing.T) {
	a := setupGroups(t)
	rev := a.revision()
	for _, tt := range []struct {
		name string
		args []string
		code string
	}{
		{"ProjectGroupsMissing", []string{"project", "groups", "fraud", "g1", "nope"}, "GROUP_NOT_FOUND"},
		{"ProjectGroupsTwice", []string{"project", "groups", "fraud", "g1", "g1"}, "INVALID_REQUEST"},
		{"ProjectGroupsNoProject", []string{"project", "groups", "nope", "g1"}, "PROJECT_NOT_FOUND"},
		{"SetMissingGroup", []string{"group", "set", "nope", "A", "v"}, "GROUP_NOT_FOUND"},
		{"SetReserved", []string{"group", "set", "g1", "HOPSWORKS_X", "v"}, "ENV_VAR_RESERVED_NAME"},
		{"SetBadName", []string{"group", "set", "g1", "1X", "v"}, "ENV_VAR_INVALID_NAME"},
		{"UnsetMissing", []string{"group", "unset", "g1", "NOPE"}, "ENV_VAR_NOT_FOUND"},
		{"CreateTwice", []string{"group", "create", "g1"}, "GROUP_ALREADY_EXISTS"},
		{"CreateBadName", []string{"group", "create", "a/b"}, "INVALID_REQUEST"},
		{"AssignMissingProject", []string{"group", "assign", "g1", "fraud", "nope"}, "PROJECT_NOT_FOUND"},
		{"AssignMissingGroup", []string{"group", "assign", "nope", "fraud"}, "GROUP_NOT_FOUND"},
		{"ShowMissing", []string{"group", "show", "nope"}, "GROUP_NOT_FOUND"},
		{"DeleteMissing", []string{"group", "delete", "nope"}, "GROUP_NOT_FOUND"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := a.cliAs(0, tt.args...)
			if r.code != 1 || !strings.HasPrefix(r.stderr, "envlet: "+tt.code+": ") {
				t.Fatalf("want envlet: %s: …, got %s", tt.code, r)
			}
		})
	}
	if got := a.revision(); got != rev {
		t.Errorf("refused group requests moved the revision from %d to %d", rev, got)
	}
}

// TestGroupVisibility: members see their projects' groups, masked values
// masked even with --reveal; admins reveal; others see nothing.
func TestGroupVisibility(t *testing.T) {
	a := startAgent(t, "")
	member, other := a.uid("member"), a.uid("other")
	a.cli("project", "create", "fraud")
	a.cli("project", "add-member", "fraud", uidName(member))
	a.cli("group", "create", "base")
	a.cli("group", "create", "hidden")
	a.cli("group", "set", "base", "PLAIN", "visible")
	a.cli("group", "set", "base", "DB_PASSWORD", "canary-group-1")
	a.cli("group", "set", "--secret", "base", "FLAGGED", "canary-group-2")
	a.cli("group", "assign", "base", "fraud")

	r := a.cliAs(member, "group", "show", "--reveal", "--json", "base")
	if r.code != 0 {
		t.Fatalf("member show: %s", r)
	}
	var g struct {
		Projects  []string
		Variables []struct {
			Name, Value string
			Masked      bool
		}
	}
	json.Unmarshal([]byte(r.stdout), &g)
	got := map[string]string{}
	for _, v := range g.Variables {
		got[v.Name] = v.Value
	}
	if got["PLAIN"] != "visible" || got["DB_PASSWORD"] != "********" || got["FLAGGED"] != "********" {
		t.Errorf("member sees %v; want PLAIN in clear and the rest masked", got)
	}
	if r := a.cliAs(member, "group", "list"); r.code != 0 || !strings.Contains(r.stdout, "base") || strings.Contains(r.stdout, "hidden") {
		t.Errorf("member group list: %s", r)
	}
	for _, args := range [][]string{{"group", "show", "hidden"}, {"group", "show", "nope"}} {
		if r := a.cliAs(member, args...); r.code != 1 || !strings.Contains(r.stderr, "PERMISSION_DENIED") {
			t.Errorf("member %v: %s", args, r)
		}
	}
	if r := a.cliAs(other, "group", "show", "base"); r.code != 1 || !strings.Contains(r.stderr, "PERMISSION_DENIED") {
		t.Errorf("non-member show: %s", r)
	}
	if r := a.cliAs(other, "group", "list", "--json"); r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("non-member list: %s", r)
	}
	// A member's explain shows group variables, masked ones masked.
	r = a.cliAs(member, "explain", "--user", uidName(member), "--project", "fraud", "--reveal", "--json")
	if r.code != 0 || !strings.Contains(r.stdout, `"group:base"`) || !strings.Contains(r.stdout, "visible") {
		t.Errorf("member explain: %s", r)
	}
	// The admin reveals.
	out := a.runAs(0, 0, "", nil, bins.envlet, "group", "show", "--reveal", "base").stdout
	if !strings.Contains(out, "canary-group-1") || !strings.Contains(out, "canary-group-2") {
		t.Errorf("admin --reveal does not show the masked values:\n%s", out)
	}
	a.cli("group", "show", "base")
	a.noCanary("canary-group-1", "canary-group-2")
}
