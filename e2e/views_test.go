package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

// Whole views (issue 12 §4), each over the real admin socket as real
// other uids: what one user can read across the places it is kept.

// secretListed is one line of `secret list --json` across owners.
type secretListed struct {
	Name       string `json:"name"`
	Kind       string `json:"kind"`
	Size       int    `json:"size"`
	Visibility string `json:"visibility"`
	Project    string `json:"project"`
}

func (a *agentProc) secretsAs(uid uint32, args ...string) []secretListed {
	a.t.Helper()
	var got []secretListed
	if err := json.Unmarshal([]byte(a.mustAs(uid, append([]string{"secret", "list", "--json"}, args...)...)), &got); err != nil {
		a.t.Fatal(err)
	}
	return got
}

func secretKeys(ss []secretListed) string {
	var out []string
	for _, s := range ss {
		out = append(out, s.Visibility+":"+s.Project+":"+s.Name)
	}
	return strings.Join(out, " ")
}

// TestViewsSecretListAcrossProjects: `secret list` with no --project
// shows a user's private secrets and those of each project they are in,
// with their visibility, and nothing of a project they are not in nor of
// another user; --project P narrows it, and is refused for a project the
// caller is not in.
func TestViewsSecretListAcrossProjects(t *testing.T) {
	a := startAgent(t, "")
	u := freeUIDs(t, 3)
	alice, bob, outsider := u[0], u[1], u[2]
	for _, p := range []string{"alpha", "beta", "gamma"} {
		a.cli("project", "create", p)
	}
	a.cli("project", "add-member", "alpha", uidName(alice))
	a.cli("project", "add-member", "--owner", "beta", uidName(alice))
	a.cli("project", "add-member", "gamma", uidName(bob))
	const canary = "canary-views-secret-list-5e2a"
	a.mustAs(alice, "secret", "create", "MINE", canary)
	a.mustAs(bob, "secret", "create", "BOBS", canary)
	a.cli("secret", "create", "--project", "alpha", "A_KEY", canary)
	a.cli("secret", "create", "--project", "beta", "B_KEY", canary+"-longer")
	a.cli("secret", "create", "--project", "gamma", "G_KEY", canary)

	if got, want := secretKeys(a.secretsAs(alice)), "private::MINE project:alpha:A_KEY project:beta:B_KEY"; got != want {
		t.Errorf("alice's secret list: %s, want %s", got, want)
	}
	if got, want := secretKeys(a.secretsAs(alice, "--project", "beta")), "project:beta:B_KEY"; got != want {
		t.Errorf("alice's secret list --project beta: %s, want %s", got, want)
	}
	if got, want := secretKeys(a.secretsAs(bob)), "private::BOBS project:gamma:G_KEY"; got != want {
		t.Errorf("bob's secret list: %s, want %s", got, want)
	}
	if got := a.secretsAs(outsider); len(got) != 0 {
		t.Errorf("a user in no project with no secrets lists %v", got)
	}
	// The table has the visibility column.
	table := a.mustAs(alice, "secret", "list")
	for _, want := range []string{"VISIBILITY", "MINE", "private", "project alpha", "project beta"} {
		if !strings.Contains(table, want) {
			t.Errorf("secret list table lacks %q:\n%s", want, table)
		}
	}
	// Refusals: a project the caller is not in, and one that does not
	// exist, alike (no hint which projects exist); an admin gets
	// PROJECT_NOT_FOUND for a missing one.
	a.refusedAs(alice, "PERMISSION_DENIED", "secret", "list", "--project", "gamma")
	a.refusedAs(alice, "PERMISSION_DENIED", "secret", "list", "--project", "nosuch")
	a.refusedAs(outsider, "PERMISSION_DENIED", "secret", "list", "--project", "alpha", "--json")
	a.refusedAs(0, "PROJECT_NOT_FOUND", "secret", "list", "--project", "nosuch")
	if got := secretKeys(a.secretsAs(0, "--project", "gamma")); got != "project:gamma:G_KEY" {
		t.Errorf("an admin's secret list --project gamma: %s", got)
	}
	a.noCanary(canary)
}

// TestViewsProjectEnvWithGroups: `project env list P` shows the project's
// own variables, then its groups', highest first, each with its source
// and masked as usual (a group's masked values stay masked to everyone
// but admins, even with --reveal); --own only the project's own; a user
// not in the project is refused.
func TestViewsProjectEnvWithGroups(t *testing.T) {
	a := startAgent(t, "")
	u := freeUIDs(t, 3)
	owner, member, outsider := u[0], u[1], u[2]
	a.cli("project", "create", "p")
	a.cli("project", "add-member", "--owner", "p", uidName(owner))
	a.cli("project", "add-member", "p", uidName(member))
	const canary = "canary-views-group-token-91c3"
	a.cli("group", "create", "g1")
	a.cli("group", "create", "g2")
	a.cli("group", "set", "g1", "FOO", "from-g1")
	a.cli("group", "set", "g1", "BAR", "bar-g1")
	a.cli("group", "set", "g2", "BAR", "bar-g2")
	a.cli("group", "set", "g2", "G2_TOKEN", canary)
	a.cli("project", "groups", "p", "g1", "g2")
	a.mustAs(owner, "project", "env", "set", "p", "FOO", "own")

	want := "FOO=own\n# group:g2 (read-only)\nBAR=bar-g2\nG2_TOKEN=********\n# group:g1 (read-only)\nBAR=bar-g1\nFOO=from-g1\n"
	for _, uid := range []uint32{member, owner} {
		if got := a.mustAs(uid, "project", "env", "list", "p"); got != want {
			t.Errorf("project env list p as %d:\n%s\nwant\n%s", uid, got, want)
		}
		// --reveal does not reveal a group's masked value to a non-admin.
		if got := a.mustAs(uid, "project", "env", "list", "p", "--reveal"); !strings.Contains(got, "G2_TOKEN=********") {
			t.Errorf("project env list p --reveal as %d shows a group's masked value:\n%s", uid, got)
		}
		if got := a.mustAs(uid, "project", "env", "list", "p", "--own"); got != "FOO=own\n" {
			t.Errorf("project env list p --own as %d: %q", uid, got)
		}
	}
	var vars []struct {
		Name, Value, Source string
		Masked              bool
	}
	if err := json.Unmarshal([]byte(a.mustAs(member, "project", "env", "list", "p", "--json")), &vars); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range vars {
		got = append(got, v.Source+":"+v.Name)
	}
	if g, w := strings.Join(got, " "), "project:FOO group:g2:BAR group:g2:G2_TOKEN group:g1:BAR group:g1:FOO"; g != w {
		t.Errorf("project env list --json sources: %s, want %s", g, w)
	}
	a.noCanary(canary)
	// An admin may reveal a group's values.
	if got := a.cli("project", "env", "list", "p", "--reveal"); !strings.Contains(got, "G2_TOKEN="+canary) {
		t.Errorf("an admin's project env list --reveal: %s", got)
	}
	a.refusedAs(outsider, "PERMISSION_DENIED", "project", "env", "list", "p")
	a.refusedAs(outsider, "PERMISSION_DENIED", "project", "env", "list", "p", "--json")
	a.refusedAs(outsider, "PERMISSION_DENIED", "project", "env", "list", "nosuch")
}

// TestViewsProjectLeave: a member leaves a project and no longer reaches
// it, their account variables kept; an owner leaves only while another
// owner remains (PROJECT_LAST_OWNER, nothing changed); a user not in the
// project is refused, for a missing project alike.
func TestViewsProjectLeave(t *testing.T) {
	a := startAgent(t, "")
	u := freeUIDs(t, 4)
	owner1, owner2, member, outsider := u[0], u[1], u[2], u[3]
	a.cli("project", "create", "p")
	a.cli("project", "add-member", "--owner", "p", uidName(owner1))
	a.cli("project", "add-member", "--owner", "p", uidName(owner2))
	a.cli("project", "add-member", "p", uidName(member))
	a.mustAs(member, "env", "set", "MINE", "kept")
	a.mustAs(member, "secret", "create", "MY_SECRET", "kept-too")

	a.refusedAs(outsider, "PERMISSION_DENIED", "project", "leave", "p")
	a.refusedAs(outsider, "PERMISSION_DENIED", "project", "leave", "nosuch")
	a.refusedAs(0, "NOT_FOUND", "project", "leave", "p") // an admin not in it

	a.mustAs(member, "project", "leave", "p")
	a.refusedAs(member, "PERMISSION_DENIED", "project", "show", "p")
	a.refusedAs(member, "PERMISSION_DENIED", "project", "leave", "p") // no longer in it
	if got := a.mustAs(member, "env", "list"); got != "MINE=kept\n" {
		t.Errorf("the member's account variables after leaving: %q", got)
	}
	if got := secretKeys(a.secretsAs(member)); got != "private::MY_SECRET" {
		t.Errorf("the member's secrets after leaving: %s", got)
	}

	a.mustAs(owner1, "project", "leave", "p") // owner2 remains
	msg := a.refusedAs(owner2, "PROJECT_LAST_OWNER", "project", "leave", "p")
	if !strings.Contains(msg, "only owner") {
		t.Errorf("the last owner's refusal does not say why: %s", msg)
	}
	var p struct{ Owners, Members []string }
	if err := json.Unmarshal([]byte(a.mustAs(owner2, "project", "show", "p", "--json")), &p); err != nil {
		t.Fatal(err)
	}
	if strings.Join(p.Owners, ",") != uidName(owner2) || len(p.Members) != 0 {
		t.Errorf("project p after the leaves: %+v, want owner %s alone", p, uidName(owner2))
	}
	if out := a.cli("audit", "list", "--action", "leave", "--json"); strings.Count(out, `"action": "leave"`) != 2 {
		t.Errorf("audit list --action leave: want 2 records:\n%s", out)
	}
}

// TestViewsExplainPreview: `explain --project P -e NAME=VALUE` shows what
// a new workload of the caller in P would start with, the overrides as
// its execution layer (an empty value clears), and it is what `envlet
// run` with the same -e then gives the program; nothing is registered.
// A non-member, a member previewing another user, and bad names are
// refused.
func TestViewsExplainPreview(t *testing.T) {
	a := startAgent(t, "PATH = /usr/bin:/bin")
	u := freeUIDs(t, 3)
	owner, member, outsider := u[0], u[1], u[2]
	a.cli("project", "create", "p")
	a.cli("project", "add-member", "--owner", "p", uidName(owner))
	a.cli("project", "add-member", "p", uidName(member))
	a.cli("group", "create", "g")
	a.cli("group", "set", "g", "FROM_GROUP", "g")
	a.cli("group", "set", "g", "LEVEL", "group")
	a.cli("group", "assign", "g", "p")
	a.mustAs(owner, "project", "env", "set", "p", "LEVEL", "project")
	a.mustAs(owner, "project", "env", "set", "p", "GONE", "project")
	a.mustAs(member, "env", "set", "MINE", "account")
	const canary = "canary-views-preview-token-3f70"
	args := []string{"--project", "p", "-e", "LEVEL=exec", "-e", "GONE=", "-e", "NEW_TOKEN=" + canary}

	ex := a.explainAs(member, args...)
	for name, want := range map[string]string{"LEVEL": "execution", "GONE": "execution", "NEW_TOKEN": "execution",
		"MINE": "account", "FROM_GROUP": "group:g", "PATH": "platform"} {
		if e := ex[name]; len(e) != 1 || e[0].Layer != want {
			t.Errorf("preview %s: %+v, want layer %s", name, e, want)
		}
	}
	if e := ex["LEVEL"]; len(e) == 1 && (e[0].Value != "exec" || strings.Join(e[0].Overrides, ",") != "project,group:g") {
		t.Errorf("preview LEVEL: %+v, want exec over project,group:g", e[0])
	}
	if e := ex["GONE"]; len(e) == 1 && !e[0].Cleared {
		t.Errorf("preview GONE: %+v, want cleared", e[0])
	}
	if e := ex["NEW_TOKEN"]; len(e) == 1 && (!e[0].Masked || e[0].Value == canary) {
		t.Errorf("preview NEW_TOKEN is not masked: %+v", e[0])
	}
	if table := a.mustAs(member, append([]string{"explain"}, args...)...); !strings.Contains(table, "(cleared)") || !strings.Contains(table, "execution") {
		t.Errorf("explain preview table:\n%s", table)
	}
	// Nothing was registered.
	if got := a.cli("workload", "list", "--json"); strings.TrimSpace(got) != "[]" {
		t.Errorf("a preview registered something: %s", got)
	}
	a.noCanary(canary)

	// What the preview said is what a run with the same -e gives.
	r := a.runCLI(member, append(append([]string{"run"}, args...), "--", "env")...)
	if r.code != 0 {
		t.Fatalf("envlet run: %s", r)
	}
	env := envOf(r.stdout)
	for name, e := range ex {
		got, ok := env[name]
		switch {
		case e[0].Cleared && ok:
			t.Errorf("preview cleared %s, the run has %q", name, got)
		case !e[0].Cleared && !ok:
			t.Errorf("preview has %s, the run does not", name)
		case !e[0].Cleared && !e[0].Masked && got != e[0].Value:
			t.Errorf("preview %s=%q, the run %q", name, e[0].Value, got)
		}
	}

	a.refusedAs(outsider, "PERMISSION_DENIED", "explain", "--project", "p", "-e", "A=1")
	a.refusedAs(outsider, "PERMISSION_DENIED", "explain", "--project", "p", "--json")
	a.refusedAs(outsider, "PERMISSION_DENIED", "explain", "--project", "nosuch")
	a.refusedAs(member, "PERMISSION_DENIED", "explain", "--user", uidName(owner), "--project", "p", "-e", "A=1")
	a.refusedAs(member, "ENV_VAR_INVALID_NAME", "explain", "--project", "p", "-e", "1BAD=x")
	a.refusedAs(0, "PROJECT_NOT_FOUND", "explain", "--project", "nosuch", "-e", "A=1")
	// An admin previews for a user.
	if e := a.explainAs(0, "--user", uidName(member), "--project", "p", "-e", "A=1")["MINE"]; len(e) != 1 || e[0].Layer != "account" {
		t.Errorf("an admin's preview for the member: MINE %+v", e)
	}
}

// TestViewsGroupAllProjects: `group assign G --all-projects` puts G in
// every project's order, present and future, below the project's own
// groups; it is stored with the group (it survives a restart, on both
// backends), explain and project env list show it as group:G, and
// `group unassign G --all-projects` undoes it. Only admins assign.
func TestViewsGroupAllProjects(t *testing.T) {
	t.Run("local", func(t *testing.T) { testGroupAllProjects(t, startAgent(t, "PATH = /usr/bin:/bin")) })
	t.Run("etcd", func(t *testing.T) {
		c := sharedE2EEtcd(t)
		testGroupAllProjects(t, startEtcdAgent(t, c.Endpoints(), uniquePrefix(), newKeyRing(t)))
	})
}

func testGroupAllProjects(t *testing.T, a *agentProc) {
	u := freeUIDs(t, 3)
	owner, member, outsider := u[0], u[1], u[2]
	a.cli("project", "create", "p1")
	a.cli("project", "add-member", "--owner", "p1", uidName(owner))
	a.cli("project", "add-member", "p1", uidName(member))
	a.cli("group", "create", "shared")
	a.cli("group", "set", "shared", "SHARED_ONLY", "shared")
	a.cli("group", "set", "shared", "OVER", "shared")
	a.cli("group", "create", "own")
	a.cli("group", "set", "own", "OVER", "own")
	a.cli("group", "assign", "own", "p1")
	a.register(map[string]any{"id": "wm", "user": uidName(member), "project": "p1", "match": map[string]any{"uid": member}})

	for _, uid := range []uint32{owner, member, outsider} {
		a.refusedAs(uid, "PERMISSION_DENIED", "group", "assign", "shared", "--all-projects")
	}
	a.cli("group", "assign", "shared", "--all-projects")
	a.cli("group", "assign", "shared", "--all-projects") // again: no change, no error

	check := func(when string) {
		t.Helper()
		env, r := a.launchEnv(member, member)
		if r.code != 0 {
			t.Fatalf("%s: launch: %s", when, r)
		}
		checkEnv(t, env, map[string]string{"SHARED_ONLY": "shared", "OVER": "own"})
		ex := a.explainAs(member, "--workload", "wm")
		if e := ex["SHARED_ONLY"]; len(e) != 1 || e[0].Layer != "group:shared" {
			t.Errorf("%s: explain SHARED_ONLY: %+v, want group:shared", when, e)
		}
		if e := ex["OVER"]; len(e) != 1 || e[0].Layer != "group:own" || strings.Join(e[0].Overrides, ",") != "group:shared" {
			t.Errorf("%s: explain OVER: %+v, want the project's own group over group:shared", when, e)
		}
		want := "# group:own (read-only)\nOVER=own\n# group:shared (read-only)\nOVER=shared\nSHARED_ONLY=shared\n"
		if got := a.mustAs(member, "project", "env", "list", "p1"); got != want {
			t.Errorf("%s: project env list p1:\n%s\nwant\n%s", when, got, want)
		}
	}
	check("assigned")

	// A project created later has it too.
	a.cli("project", "create", "p2")
	a.cli("project", "add-member", "p2", uidName(outsider))
	if e := a.explainAs(outsider, "--project", "p2")["SHARED_ONLY"]; len(e) != 1 || e[0].Layer != "group:shared" {
		t.Errorf("a project created after: explain SHARED_ONLY %+v", e)
	}
	// Members of any project see the group; list and show say all.
	if out := a.mustAs(outsider, "group", "show", "shared", "--json"); !strings.Contains(out, `"all_projects": true`) {
		t.Errorf("group show shared as a member of p2: %s", out)
	}
	if out := a.mustAs(outsider, "group", "list"); !strings.Contains(out, "(all)") {
		t.Errorf("group list as a member of p2:\n%s", out)
	}

	a.restart()
	check("after a restart")

	for _, uid := range []uint32{owner, member} {
		a.refusedAs(uid, "PERMISSION_DENIED", "group", "unassign", "shared", "--all-projects")
	}
	a.cli("group", "unassign", "shared", "--all-projects")
	a.refusedAs(0, "NOT_FOUND", "group", "unassign", "shared", "--all-projects")
	env, r := a.launchEnv(member, member)
	if r.code != 0 {
		t.Fatalf("launch: %s", r)
	}
	if v, ok := env["SHARED_ONLY"]; ok {
		t.Errorf("after unassign --all-projects the workload still gets SHARED_ONLY=%q", v)
	}
	a.refusedAs(outsider, "PERMISSION_DENIED", "group", "show", "shared")
	if out := a.cli("audit", "list", "--group", "shared", "--json"); !strings.Contains(out, "(all projects)") {
		t.Errorf("audit list --group shared has no all-projects record:\n%s", out)
	}
}
