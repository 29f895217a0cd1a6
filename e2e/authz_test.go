package e2e

import (
	"bytes"
	"fmt"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// The authorization table of docs/concepts.md ("Who may do what"), one test per
// cell: every row is run by an admin (root, a member of the envlet-admin
// group, the user who started envletd -dev), a project owner, a project
// member and another user. A refusal must be PERMISSION_DENIED and leave
// the store's revision where it was.

// subject is who runs a command.
type subject struct {
	role   string // admin, owner, member, other
	label  string
	uid    uint32
	groups []uint32 // supplementary groups
	user   string   // the name the agent gives the uid
}

// authzUIDs are the uids of the authorization tests, none of them an
// account on this machine (freeUIDs), so the agent names each by its number.
type authzUIDs struct {
	group, owner, member, other, dev uint32 // the subjects
	memberWork, victim               uint32 // the member's workload; the victim's workload, who writes the victim's secret
	spare1, spare2                   uint32 // workloads registered by rows
}

func newAuthzUIDs(t *testing.T) authzUIDs {
	u := freeUIDs(t, 9)
	return authzUIDs{group: u[0], owner: u[1], member: u[2], other: u[3], dev: u[4],
		memberWork: u[5], victim: u[6], spare1: u[7], spare2: u[8]}
}

// adminGroupGID makes sure the envlet-admin group exists and returns its gid.
func adminGroupGID(t *testing.T) uint32 {
	t.Helper()
	g, err := user.LookupGroup("envlet-admin")
	if err != nil {
		if out, err := exec.Command("groupadd", "-f", "envlet-admin").CombinedOutput(); err != nil {
			t.Fatalf("groupadd envlet-admin: %v\n%s", err, out)
		}
		if g, err = user.LookupGroup("envlet-admin"); err != nil {
			t.Fatal(err)
		}
	}
	gid, _ := strconv.Atoi(g.Gid)
	return uint32(gid)
}

// runSubject runs the CLI as s, with its supplementary groups.
func (a *agentProc) runSubject(s subject, stdin string, args ...string) result {
	a.t.Helper()
	if s.uid == 0 && len(s.groups) == 0 {
		return a.runAs(0, 0, stdin, nil, bins.envlet, args...)
	}
	cmd := exec.Command(bins.envlet, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/", "ENVLET_ADMIN_SOCKET=" + a.adminSock}
	cmd.Dir = "/"
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: s.uid, Gid: s.uid, Groups: s.groups}}
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		a.t.Fatalf("run envlet: %v", err)
	}
	shown := r.stdout + r.stderr
	if contains(args, "--reveal") || contains(args, "--decode") {
		shown = r.stderr
	}
	a.record(fmt.Sprintf("envlet %s (uid %d groups %v)", strings.Join(args[:min(2, len(args))], " "), s.uid, s.groups), shown)
	return r
}

// authzFixture: project fraud (owner u.owner, member u.member), a victim user
// with an account variable and a private secret, a group assigned to
// fraud and one assigned nowhere, workloads of the member and the victim.
func authzFixture(a *agentProc, u authzUIDs) {
	a.cli("project", "create", "fraud")
	a.cli("project", "add-member", "--owner", "fraud", uidName(u.owner))
	a.cli("project", "add-member", "fraud", uidName(u.member))
	a.cli("project", "env", "set", "fraud", "DB_PASSWORD", "canary-authz-pv")
	a.cli("project", "env", "set", "fraud", "PLAIN", "plain")
	a.cli("env", "set", "--user", "victim", "KEEP", "canary-authz-acct")
	a.cli("group", "create", "base")
	a.cli("group", "create", "hidden")
	a.cli("group", "set", "base", "G_TOKEN", "canary-authz-g")
	a.cli("group", "assign", "base", "fraud")
	a.cli("secret", "create", "--project", "fraud", "PS", "canary-authz-ps")
	a.register(map[string]any{"id": "wm", "user": uidName(u.member), "project": "fraud", "match": map[string]any{"uid": u.memberWork}})
	a.register(map[string]any{"id": "wv", "user": "victim", "project": "fraud", "match": map[string]any{"uid": u.victim}})
}

// authzRow is one row of that table.
type authzRow struct {
	row   string
	allow string // the roles that may: some of "admin owner member other"
	setup func(a *agentProc, s subject, tag string)
	args  func(s subject, tag string) []string
	stdin string
	// check, if set, checks an allowed outcome further (what it shows).
	check func(s subject, r result) bool
}

func authzRows(u authzUIDs) []authzRow {
	victim := uidName(u.victim)
	args := func(a ...string) func(subject, string) []string {
		return func(_ subject, tag string) []string {
			out := make([]string, len(a))
			for i, x := range a {
				out[i] = strings.ReplaceAll(x, "TAG", tag)
			}
			return out
		}
	}
	root := func(cmd ...string) func(a *agentProc, s subject, tag string) {
		return func(a *agentProc, _ subject, tag string) {
			a.t.Helper()
			out := make([]string, len(cmd))
			for i, x := range cmd {
				out[i] = strings.ReplaceAll(x, "TAG", tag)
			}
			a.cli(out...)
		}
	}
	has := func(s string) func(subject, result) bool {
		return func(_ subject, r result) bool { return strings.Contains(r.stdout, s) }
	}
	// shows says, by role, whether the output must hold s.
	shows := func(s string, roles string) func(subject, result) bool {
		return func(sub subject, r result) bool {
			return strings.Contains(r.stdout, s) == strings.Contains(roles, sub.role)
		}
	}
	return []authzRow{
		// Account variables.
		{row: "own account variables: set", allow: "admin owner member other", args: args("env", "set", "OWN_TAG", "v")},
		{row: "own account variables: list --reveal", allow: "admin owner member other", args: args("env", "list", "--reveal")},
		{row: "own account variables: delete", allow: "admin owner member other",
			setup: func(a *agentProc, s subject, tag string) { a.cli("env", "set", "--user", s.user, "D_"+tag, "v") },
			args:  args("env", "delete", "D_TAG")},
		{row: "another user's account variables: set", allow: "admin", args: args("env", "set", "--user", "victim", "X_TAG", "v")},
		{row: "another user's account variables: list --reveal", allow: "admin", args: args("env", "list", "--user", "victim", "--reveal"),
			check: has("canary-authz-acct")},
		{row: "another user's account variables: delete", allow: "admin",
			setup: root("env", "set", "--user", "victim", "D_TAG", "v"), args: args("env", "delete", "--user", "victim", "D_TAG")},

		// Projects.
		{row: "create a project", allow: "admin", args: args("project", "create", "p_TAG")},
		{row: "delete a project", allow: "admin", setup: root("project", "create", "pd_TAG"), args: args("project", "delete", "pd_TAG")},
		{row: "show a project", allow: "admin owner member", args: args("project", "show", "fraud")},
		{row: "list projects", allow: "admin owner member other", args: args("project", "list"),
			check: shows("fraud", "admin owner member")},
		{row: "add a member", allow: "admin owner", args: args("project", "add-member", "fraud", "u_TAG")},
		{row: "remove a member", allow: "admin owner", setup: root("project", "add-member", "fraud", "r_TAG"),
			args: args("project", "remove-member", "fraud", "r_TAG")},

		// Project variables.
		{row: "set a project variable", allow: "admin owner", args: args("project", "env", "set", "fraud", "V_TAG", "v")},
		{row: "set a project variable from a secret", allow: "admin owner", args: args("project", "env", "set", "fraud", "F_TAG", "--from-secret", "PS")},
		{row: "delete a project variable", allow: "admin owner", setup: root("project", "env", "set", "fraud", "D_TAG", "v"),
			args: args("project", "env", "delete", "fraud", "D_TAG")},
		{row: "list project variables", allow: "admin owner member", args: args("project", "env", "list", "fraud"),
			check: has("PLAIN=plain")},
		{row: "list project variables --reveal", allow: "admin owner member", args: args("project", "env", "list", "--reveal", "fraud"),
			check: shows("canary-authz-pv", "admin owner")},

		// Groups.
		{row: "create a group", allow: "admin", args: args("group", "create", "g_TAG")},
		{row: "set a group variable", allow: "admin", args: args("group", "set", "base", "X_TAG", "v")},
		{row: "unset a group variable", allow: "admin", setup: root("group", "set", "base", "U_TAG", "v"), args: args("group", "unset", "base", "U_TAG")},
		{row: "assign a group", allow: "admin", setup: root("group", "create", "ga_TAG"), args: args("group", "assign", "ga_TAG", "fraud")},
		{row: "unassign a group", allow: "admin",
			setup: func(a *agentProc, s subject, tag string) {
				a.cli("group", "create", "gu_"+tag)
				a.cli("group", "assign", "gu_"+tag, "fraud")
			},
			args: args("group", "unassign", "gu_TAG", "fraud")},
		{row: "set a project's groups", allow: "admin", args: args("project", "groups", "fraud", "base")},
		{row: "delete a group", allow: "admin", setup: root("group", "create", "gd_TAG"), args: args("group", "delete", "gd_TAG")},
		{row: "list groups", allow: "admin owner member other", args: args("group", "list"),
			check: func(s subject, r result) bool {
				return strings.Contains(r.stdout, "base") == (s.role != "other") && strings.Contains(r.stdout, "hidden") == (s.role == "admin")
			}},
		{row: "show a group", allow: "admin owner member", args: args("group", "show", "base"), check: has("G_TOKEN=********")},
		{row: "show a group --reveal", allow: "admin owner member", args: args("group", "show", "--reveal", "base"),
			check: shows("canary-authz-g", "admin")},

		// Secrets.
		{row: "own private secrets: create", allow: "admin owner member other", args: args("secret", "create", "S_TAG", "v")},
		{row: "own private secrets: reveal", allow: "admin owner member other",
			setup: func(a *agentProc, s subject, tag string) {
				a.runSubject(s, "", "secret", "create", "R_"+tag, "own-"+tag)
			},
			args: args("secret", "get", "--reveal", "R_TAG"), check: has("own-")},
		{row: "own private secrets: delete", allow: "admin owner member other",
			setup: func(a *agentProc, s subject, tag string) { a.runSubject(s, "", "secret", "create", "D_"+tag, "v") },
			args:  args("secret", "delete", "D_TAG")},
		{row: "another user's private secrets: list", allow: "admin", args: args("secret", "list", "--user", victim)},
		{row: "another user's private secrets: reveal", allow: "admin", args: args("secret", "get", "--reveal", "--user", victim, "VS"),
			check: has("canary-authz-vs")},
		{row: "another user's private secrets: write", allow: "", args: args("secret", "create", "--user", victim, "W_TAG", "v")},
		{row: "another user's private secrets: delete", allow: "", args: args("secret", "delete", "--user", victim, "VS")},
		{row: "project secrets: create", allow: "admin owner member", args: args("secret", "create", "--project", "fraud", "PS_TAG", "v")},
		{row: "project secrets: list", allow: "admin owner member", args: args("secret", "list", "--project", "fraud"), check: has("PS")},
		{row: "project secrets: reveal", allow: "admin owner member", args: args("secret", "get", "--reveal", "--project", "fraud", "PS"),
			check: has("canary-authz-ps")},
		{row: "project secrets: delete", allow: "admin owner member", setup: root("secret", "create", "--project", "fraud", "PD_TAG", "v"),
			args: args("secret", "delete", "--project", "fraud", "PD_TAG")},

		// Workloads.
		{row: "register a workload", allow: "admin", args: args("workload", "register", "-"),
			stdin: fmt.Sprintf(`{"id":"wr_TAG","user":"x","project":"fraud","match":{"uid":%d}}`, u.spare1)},
		{row: "delete a workload", allow: "admin",
			setup: func(a *agentProc, s subject, tag string) {
				a.register(map[string]any{"id": "wd_" + tag, "user": "x", "project": "fraud", "match": map[string]any{"uid": u.spare2}})
			},
			args: args("workload", "delete", "wd_TAG")},
		{row: "list workloads", allow: "admin owner member other", args: args("workload", "list"),
			check: func(s subject, r result) bool {
				return strings.Contains(r.stdout, "wm ") == (s.role == "admin" || s.role == "member") &&
					strings.Contains(r.stdout, "wv ") == (s.role == "admin")
			}},
		{row: "explain a workload", allow: "admin member", args: args("explain", "--workload", "wm")},
		{row: "explain yourself in a project", allow: "admin owner member", args: args("explain", "--user", "me", "--project", "fraud")},
		{row: "explain another user", allow: "admin", args: args("explain", "--user", "victim", "--project", "fraud")},
		{row: "explain --reveal", allow: "admin owner member", args: args("explain", "--user", "me", "--project", "fraud", "--reveal"),
			check: func(s subject, r result) bool {
				// Project variables for owners; groups for admins only.
				return strings.Contains(r.stdout, "canary-authz-pv") == (s.role != "member") &&
					strings.Contains(r.stdout, "canary-authz-g") == (s.role == "admin")
			}},

		// The rest.
		{row: "audit hmac", allow: "admin", args: args("audit", "hmac", "--value-stdin"), stdin: "x"},
		{row: "status", allow: "admin owner member other", args: args("status")},
		{row: "whoami", allow: "admin owner member other", args: args("whoami"),
			check: func(s subject, r result) bool {
				return strings.Contains(r.stdout, "admin: true") == (s.role == "admin")
			}},
	}
}

func runAuthz(t *testing.T, a *agentProc, u authzUIDs, subjects []subject) {
	for i, row := range authzRows(u) {
		for _, s := range subjects {
			t.Run(strings.ReplaceAll(row.row, " ", "_")+"/"+s.label, func(t *testing.T) {
				a.t = t
				tag := fmt.Sprintf("%d_%s", i, strings.ReplaceAll(s.label, "-", "_"))
				if row.setup != nil {
					row.setup(a, s, tag)
				}
				rev := a.revision()
				r := a.runSubject(s, strings.ReplaceAll(row.stdin, "TAG", tag), row.args(s, tag)...)
				if strings.Contains(row.allow, s.role) {
					if r.code != 0 {
						t.Fatalf("%s may, yet: %s", s.label, r)
					}
					if row.check != nil && !row.check(s, r) {
						t.Fatalf("%s: allowed, but the output is wrong:\n%s", s.label, r)
					}
					return
				}
				if r.code != 1 || !strings.HasPrefix(r.stderr, "envlet: PERMISSION_DENIED: ") {
					t.Fatalf("%s may not, want PERMISSION_DENIED; got %s", s.label, r)
				}
				if strings.Contains(r.stdout+r.stderr, "canary-authz") {
					t.Errorf("a refusal shows a value: %s", r)
				}
				if got := a.revision(); got != rev {
					t.Errorf("a refusal moved the revision from %d to %d", rev, got)
				}
			})
		}
	}
}

func TestAuthorization(t *testing.T) {
	gid := adminGroupGID(t)
	u := newAuthzUIDs(t)
	a := startAgent(t, "")
	authzFixture(a, u)
	// The victim's private secret, written by the victim.
	if r := a.cliAs(u.victim, "secret", "create", "VS", "canary-authz-vs"); r.code != 0 {
		t.Fatal(r)
	}
	top := t
	runAuthz(t, a, u, []subject{
		{role: "admin", label: "root", uid: 0, user: "root"},
		{role: "admin", label: "envlet-admin", uid: u.group, groups: []uint32{gid}, user: uidName(u.group)},
		{role: "owner", label: "owner", uid: u.owner, user: uidName(u.owner)},
		{role: "member", label: "member", uid: u.member, user: uidName(u.member)},
		{role: "other", label: "other", uid: u.other, user: uidName(u.other)},
	})
	a.t = top
	a.noCanary("canary-authz-")
}

// TestAuthorizationDev: the user who started envletd -dev is an admin for
// every row.
func TestAuthorizationDev(t *testing.T) {
	u := newAuthzUIDs(t)
	a := startDevAgent(t, u.dev)
	authzFixture(a, u)
	if r := a.cliAs(u.victim, "secret", "create", "VS", "canary-authz-vs"); r.code != 0 {
		t.Fatal(r)
	}
	top := t
	runAuthz(t, a, u, []subject{
		{role: "admin", label: "dev-starter", uid: u.dev, user: uidName(u.dev)},
		{role: "other", label: "other", uid: u.other, user: uidName(u.other)},
	})
	a.t = top
	a.noCanary("canary-authz-")
}
