package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Privacy and limits (issue 11 §1–3), each played by an attacker who is a
// real other uid on the real sockets: a project owner after a member's
// private secret, a user with no role filling the agent, a member looking
// at a group's other projects, a client whose value the JSON layer would
// change on the way in, and the copies a written-then-deleted value leaves
// in the agent's memory.

// mustAs runs the CLI as uid and fails the test unless it succeeds.
func (a *agentProc) mustAs(uid uint32, args ...string) string {
	a.t.Helper()
	r := a.cliAs(uid, args...)
	if r.code != 0 {
		a.t.Fatalf("envlet %v as %d: %s", args, uid, r)
	}
	return r.stdout
}

// refusedAs runs the CLI as uid and fails the test unless it is refused
// with code; it returns the error line.
func (a *agentProc) refusedAs(uid uint32, code string, args ...string) string {
	a.t.Helper()
	r := a.cliAs(uid, args...)
	if r.code != 1 || !strings.Contains(r.stderr, code) {
		a.t.Errorf("envlet %v as %d: %s; want refused with %s", args, uid, r, code)
	}
	return r.stderr
}

// explainedRef is explain's answer with the fields that say whose secret
// a reference reached and what was left out.
type explainedRef struct {
	explained
	SecretScope string `json:"secret_scope"`
	LeftOut     string `json:"left_out"`
}

func (a *agentProc) explainAs(uid uint32, args ...string) map[string][]explainedRef {
	a.t.Helper()
	var got []explainedRef
	if err := json.Unmarshal([]byte(a.mustAs(uid, append([]string{"explain", "--json"}, args...)...)), &got); err != nil {
		a.t.Fatal(err)
	}
	by := map[string][]explainedRef{}
	for _, e := range got {
		by[e.Name] = append(by[e.Name], e)
	}
	return by
}

// TestPrivacyProjectRefReachesOnlyProjectSecrets: a project owner points a
// project variable at a member's private secret. The member's workload
// must not receive it (it did: a project-layer reference took the
// workload user's private secret first); the member's own account layer
// still reaches it, and a project secret still reaches every member.
func TestPrivacyProjectRefReachesOnlyProjectSecrets(t *testing.T) {
	a := startAgent(t, "PATH = /usr/bin:/bin")
	u := freeUIDs(t, 2)
	owner, member := u[0], u[1]
	a.cli("project", "create", "p")
	a.cli("project", "add-member", "--owner", "p", uidName(owner))
	a.cli("project", "add-member", "p", uidName(member))
	const priv, shared = "canary-privacy-member-priv-7c1e", "canary-privacy-shared-0d4b"
	a.mustAs(member, "secret", "create", "MEMBER_PRIV", priv)
	a.mustAs(member, "env", "set", "MINE", "--from-secret", "MEMBER_PRIV")
	// The attack: a reference to a name the owner cannot read.
	a.mustAs(owner, "project", "env", "set", "p", "STOLEN", "--from-secret", "MEMBER_PRIV")
	a.mustAs(owner, "secret", "create", "--project", "p", "SHARED", shared)
	a.mustAs(owner, "project", "env", "set", "p", "FROM_SHARED", "--from-secret", "SHARED")
	a.register(map[string]any{"id": "wm", "user": uidName(member), "project": "p", "match": map[string]any{"uid": member}})

	env, r := a.launchEnv(member, member)
	if r.code != 0 {
		t.Fatalf("launch: %s", r)
	}
	if v, ok := env["STOLEN"]; ok {
		t.Errorf("a project-layer reference reached the member's private secret: STOLEN=%q", v)
	}
	checkEnv(t, env, map[string]string{"MINE": priv, "FROM_SHARED": shared})

	// explain says whose secret each reference reached, and why STOLEN is
	// not there.
	ex := a.explainAs(member, "--workload", "wm")
	if e := ex["MINE"]; len(e) != 1 || e[0].SecretScope != "secret:user:"+uidName(member) || e[0].Layer != "account" {
		t.Errorf("explain MINE: %+v, want the member's own secret through the account layer", e)
	}
	if e := ex["FROM_SHARED"]; len(e) != 1 || e[0].SecretScope != "secret:project:p" {
		t.Errorf("explain FROM_SHARED: %+v, want project p's secret", e)
	}
	if e := ex["STOLEN"]; len(e) != 1 || e[0].Layer != "project" || !strings.Contains(e[0].LeftOut, "project p") {
		t.Errorf("explain STOLEN: %+v, want it left out of the project layer (only project p's secrets)", e)
	}
	a.noCanary(priv, shared)
}

// TestPrivacyCodeLoadingNames: names that make a program load code of
// whoever sets them are refused in the layers someone other than the
// workload's user writes (project, groups), with their own code, even for
// an admin; the user's own account layer and the platform layer may set
// them. A stored one (written under another config) is dropped when
// served, and explain says so.
func TestPrivacyCodeLoadingNames(t *testing.T) {
	a := startAgent(t, "PATH = /usr/bin:/bin\nNODE_OPTIONS = --max-old-space-size=64")
	u := freeUIDs(t, 2)
	owner, member := u[0], u[1]
	a.cli("project", "create", "p")
	a.cli("project", "add-member", "--owner", "p", uidName(owner))
	a.cli("project", "add-member", "p", uidName(member))
	a.cli("group", "create", "g")
	a.cli("group", "assign", "g", "p")
	for _, name := range []string{"LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "BASH_ENV", "ENV", "PROMPT_COMMAND",
		"PYTHONSTARTUP", "PYTHONPATH", "PYTHONHOME", "PERL5OPT", "PERL5LIB", "NODE_OPTIONS", "RUBYOPT", "RUBYLIB",
		"JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "_JAVA_OPTIONS", "GIT_SSH_COMMAND", "GIT_CONFIG_GLOBAL", "GCONV_PATH"} {
		msg := a.refusedAs(owner, "ENV_VAR_PROTECTED_NAME", "project", "env", "set", "p", name, "/tmp/attacker")
		if !strings.Contains(msg, "protected_names") {
			t.Errorf("the refusal of %s does not name the setting: %s", name, msg)
		}
		a.refusedAs(0, "ENV_VAR_PROTECTED_NAME", "group", "set", "g", name, "/tmp/attacker")
	}
	a.refusedAs(0, "ENV_VAR_PROTECTED_NAME", "project", "env", "set", "p", "BASH_ENV", "/tmp/admin-too")
	// The workload's own user may set them for themselves.
	a.mustAs(member, "env", "set", "PYTHONSTARTUP", "/home/me/.pythonrc")
	a.register(map[string]any{"id": "wm", "user": uidName(member), "project": "p", "match": map[string]any{"uid": member}})
	env, r := a.launchEnv(member, member)
	if r.code != 0 {
		t.Fatalf("launch: %s", r)
	}
	checkEnv(t, env, map[string]string{"PYTHONSTARTUP": "/home/me/.pythonrc", "NODE_OPTIONS": "--max-old-space-size=64", "BASH_ENV": ""})

	// Laundering: a config that protects nothing lets BASH_ENV into the
	// project layer; back on the default config, it is dropped when
	// served and explain shows why.
	conf, _ := os.ReadFile(a.config)
	os.WriteFile(a.config, []byte(strings.Replace(string(conf), "[defaults]", "protected_names =\n[defaults]", 1)), 0o644)
	a.restart()
	a.mustAs(owner, "project", "env", "set", "p", "BASH_ENV", "/tmp/attacker")
	os.WriteFile(a.config, conf, 0o644)
	a.restart()
	env, r = a.launchEnv(member, member)
	if r.code != 0 {
		t.Fatalf("launch: %s", r)
	}
	if v, ok := env["BASH_ENV"]; ok {
		t.Errorf("a stored BASH_ENV of the project layer was served: %q", v)
	}
	if e := a.explainAs(member, "--workload", "wm")["BASH_ENV"]; len(e) != 1 || e[0].Layer != "project" || !strings.Contains(e[0].LeftOut, "protected") {
		t.Errorf("explain BASH_ENV: %+v, want it shown left out as protected", e)
	}
}

// TestPrivacyGroupListShowsOwnProjects: a member sees, of a group's
// projects, only those they are in.
func TestPrivacyGroupListShowsOwnProjects(t *testing.T) {
	a := startAgent(t, "")
	member := freeUIDs(t, 1)[0]
	a.cli("project", "create", "mine")
	a.cli("project", "create", "secret-merger-2027")
	a.cli("project", "add-member", "mine", uidName(member))
	a.cli("group", "create", "g")
	a.cli("group", "assign", "g", "mine", "secret-merger-2027")
	for _, args := range [][]string{{"group", "list", "--json"}, {"group", "show", "g", "--json"}} {
		out := a.mustAs(member, args...)
		if strings.Contains(out, "secret-merger-2027") || !strings.Contains(out, "mine") {
			t.Errorf("envlet %v as a member of mine only: %s", args, out)
		}
	}
	if out := a.cli("group", "list", "--json"); !strings.Contains(out, "secret-merger-2027") {
		t.Errorf("an admin's group list lost a project: %s", out)
	}
}

// rawAdmin sends one HTTP request with a body of exactly these bytes over
// the admin socket as uid (python3: the CLI sends only valid JSON), and
// returns the status line and body of the reply.
func (a *agentProc) rawAdmin(uid uint32, method, path string, body []byte) (status int, reply string) {
	a.t.Helper()
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		if os.Getenv("CI") == "true" {
			a.t.Fatal("/usr/bin/python3 is missing (.ci/run installs python3-minimal)")
		}
		a.t.Skip("no /usr/bin/python3 to send raw requests with")
	}
	const script = `import socket, sys
sock, method, path = sys.argv[1:4]
body = sys.stdin.buffer.read()
s = socket.socket(socket.AF_UNIX)
s.connect(sock)
s.sendall(("%s %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (method, path, len(body))).encode() + body)
out = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    out += b
sys.stdout.buffer.write(out)
`
	p := filepath.Join(a.dir, "raw.py")
	os.WriteFile(p, []byte(script), 0o644)
	r := a.runAs(uid, uid, string(body), nil, "/usr/bin/python3", p, a.adminSock, method, path)
	head, rest, _ := strings.Cut(r.stdout, "\r\n\r\n")
	f := strings.Fields(head)
	if len(f) < 2 {
		a.t.Fatalf("no HTTP reply: %s", r)
	}
	status, _ = strconv.Atoi(f[1])
	return status, rest
}

// TestPrivacyValueArrivesUnchanged: a value the JSON layer would change on
// the way in (a lone UTF-16 surrogate, which encoding/json turns into
// U+FFFD; raw bytes that are not UTF-8, likewise; NUL) is refused with
// ENV_VAR_INVALID_VALUE and nothing is stored; what JSON carries exactly
// (a surrogate pair, CR, tab, a final newline) is served byte for byte.
func TestPrivacyValueArrivesUnchanged(t *testing.T) {
	a := startAgent(t, "PATH = /usr/bin:/bin")
	x := freeUIDs(t, 1)[0]
	a.cli("project", "create", "p")
	a.cli("project", "add-member", "p", uidName(x))
	a.register(map[string]any{"id": "wx", "user": uidName(x), "project": "p", "match": map[string]any{"uid": x}})
	bad := map[string]string{
		"lone high surrogate": `{"value":"x\ud800"}`,
		"lone low surrogate":  `{"value":"\udc00y"}`,
		"reversed pair":       `{"value":"\ude00\ud83d"}`,
		"invalid UTF-8 byte":  "{\"value\":\"x\xffy\"}",
		"overlong UTF-8":      "{\"value\":\"\xc0\xaf\"}",
		"UTF-8 surrogate":     "{\"value\":\"\xed\xa0\x80\"}",
		"escaped NUL":         `{"value":"a\u0000b"}`,
	}
	for what, body := range bad {
		for _, path := range []string{"/v1/users/me/secrets/S", "/v1/users/me/env/V"} {
			status, reply := a.rawAdmin(x, "PUT", path, []byte(body))
			if status != 400 || !strings.Contains(reply, "ENV_VAR_INVALID_VALUE") {
				t.Errorf("%s to %s: %d %s; want 400 ENV_VAR_INVALID_VALUE", what, path, status, reply)
			}
		}
	}
	if out := a.mustAs(x, "secret", "list", "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("a refused value was stored: %s", out)
	}
	if out := a.mustAs(x, "env", "list", "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("a refused value was stored: %s", out)
	}
	// Exactly representable values arrive as sent.
	good := map[string]string{
		"P1": `{"value":"smile \ud83d\ude00 crlf\r\n tab\t end\n"}`,
		"P2": "{\"value\":\"raw \xf0\x9f\x98\x80 \xc3\xa9\"}",
	}
	want := map[string]string{"P1": "smile \U0001F600 crlf\r\n tab\t end\n", "P2": "raw \U0001F600 é"}
	for name, body := range good {
		if status, reply := a.rawAdmin(x, "PUT", "/v1/users/me/secrets/"+name, []byte(body)); status != 200 {
			t.Fatalf("%s: %d %s", name, status, reply)
		}
		r := a.runAs(x, x, "", nil, bins.exec, "--get-secret", name)
		if r.code != 0 || r.stdout != want[name] {
			t.Errorf("secret %s served as %q, want %q (%s)", name, r.stdout, want[name], r)
		}
	}
}

// TestPrivacyLimits: everything a non-admin can grow is bounded, with a
// code of its own and a message that gives the limit and no value, and a
// refused write loses nothing stored.
func TestPrivacyLimits(t *testing.T) {
	a := startAgentConf(t, `private_secret_limit = 3
project_secret_limit = 3
project_var_limit = 3
scope_bytes_limit = 3000
mount_bytes_limit = 2500`, "PATH = /usr/bin:/bin")
	u := freeUIDs(t, 4)
	nobody, owner, member, big := u[0], u[1], u[2], u[3]
	a.cli("project", "create", "p")
	a.cli("project", "add-member", "--owner", "p", uidName(owner))
	a.cli("project", "add-member", "p", uidName(member))
	const canary = "canary-limit-9b2f"

	// Private secrets per user: a user with no role at all.
	for i := 1; i <= 3; i++ {
		a.mustAs(nobody, "secret", "create", "S"+strconv.Itoa(i), canary)
	}
	msg := a.refusedAs(nobody, "SECRET_LIMIT_EXCEEDED", "secret", "create", "S4", canary)
	if !strings.Contains(msg, "3") || !strings.Contains(msg, "private_secret_limit") || strings.Contains(msg, canary) {
		t.Errorf("refusal: %q; want the limit and the setting named, and no value", msg)
	}
	a.mustAs(nobody, "secret", "set", "S1", canary+"-updated") // an update is not a new secret
	if out := a.mustAs(nobody, "secret", "list", "--json"); strings.Count(out, `"name"`) != 3 {
		t.Errorf("after the refusal: %s", out)
	}

	// Project secrets per project: a member; project variables: the owner.
	for i := 1; i <= 3; i++ {
		a.mustAs(member, "secret", "create", "--project", "p", "PS"+strconv.Itoa(i), canary)
		a.mustAs(owner, "project", "env", "set", "p", "PV"+strconv.Itoa(i), "v")
	}
	a.refusedAs(member, "SECRET_LIMIT_EXCEEDED", "secret", "create", "--project", "p", "PS4", canary)
	a.refusedAs(owner, "ENV_VAR_LIMIT_EXCEEDED", "project", "env", "set", "p", "PV4", "v")
	a.mustAs(owner, "project", "env", "set", "p", "PV1", "changed") // a change of an existing one is no growth

	// The bytes a scope holds: a user's account variables and private
	// secrets together.
	long := strings.Repeat("x", 1400)
	a.mustAs(big, "secret", "create", "B1", long)
	a.mustAs(big, "env", "set", "V1", long)
	msg = a.refusedAs(big, "SECRET_LIMIT_EXCEEDED", "secret", "create", "B2", long)
	if !strings.Contains(msg, "3000") || !strings.Contains(msg, "scope_bytes_limit") {
		t.Errorf("refusal: %q; want the byte limit and the setting named", msg)
	}
	a.refusedAs(big, "ENV_VAR_LIMIT_EXCEEDED", "env", "set", "V2", long)
	a.refusedAs(big, "SECRET_LIMIT_EXCEEDED", "secret", "set", "B1", long+long) // growing one counts too
	a.mustAs(big, "secret", "set", "B1", "short")                               // shrinking always works
	a.mustAs(big, "env", "set", "V2", long)

	// What a mount may hold: a mounted workload of p gets the project's
	// secrets; a version over mount_bytes_limit is not written, the last
	// one stays, and the log says why (names and sizes, no value).
	a.register(map[string]any{"id": "wm", "user": uidName(member), "project": "p", "match": map[string]any{"uid": member}, "mount": true})
	a.waitLog("mount written: workload=wm ", 1)
	a.mustAs(member, "secret", "set", "--project", "p", "PS1", strings.Repeat("y", 2600))
	a.waitLog("mount_bytes_limit", 1)
	b, err := os.ReadFile(filepath.Join(a.dir, "mounts", "wm", "secrets", "PS1"))
	if err != nil || string(b) != canary {
		t.Errorf("mount secrets/PS1 after a version over the limit: %q %v; want the last version kept", b, err)
	}
	a.noCanary(canary)
}

// TestPrivacyDefaultSecretLimit: with the default config, a user with no
// role cannot store an unbounded number of private secrets.
func TestPrivacyDefaultSecretLimit(t *testing.T) {
	a := startAgent(t, "")
	x := freeUIDs(t, 1)[0]
	for i := 0; i < 100; i++ {
		a.mustAs(x, "secret", "create", "S"+strconv.Itoa(i), "v")
	}
	msg := a.refusedAs(x, "SECRET_LIMIT_EXCEEDED", "secret", "create", "S100", "v")
	if !strings.Contains(msg, "100") {
		t.Errorf("refusal %q does not give the limit", msg)
	}
}

// TestPrivacyAdminWriteLeavesNoCopy: values written through the admin API
// (by a user with no role and by an admin, single-line, multi-line and
// escaped) and then deleted leave no copy anywhere in the agent's memory:
// not in the cache, the heap (request buffers, decoded strings) or a stack.
func TestPrivacyAdminWriteLeavesNoCopy(t *testing.T) {
	a := startAgent(t, "")
	x := freeUIDs(t, 1)[0]
	a.cli("project", "create", "p")
	a.cli("group", "create", "g")
	can := []string{
		"canary-nocopy-secret-6a1f", "canary-nocopy-var-2c9e", `canary-nocopy-multi-81d3\nline-two-55e0`,
		"canary-nocopy-proj-0f3a", "canary-nocopy-group-7b44", `canary-nocopy-quote-\"-e91c`,
	}
	// What JSON carries: as sent (escaped) and as decoded.
	needles := []string{}
	for _, c := range can {
		needles = append(needles, c)
		dec := strings.NewReplacer(`\n`, "\n", `\\`, `\`, `\"`, `"`).Replace(c)
		if dec != c {
			needles = append(needles, dec)
		}
	}
	put := func(uid uint32, path, value string) {
		t.Helper()
		if st, reply := a.rawAdmin(uid, "PUT", path, []byte(`{"value":"`+value+`"}`)); st != 200 {
			t.Fatalf("PUT %s: %d %s", path, st, reply)
		}
	}
	del := func(uid uint32, path string) {
		t.Helper()
		if st, reply := a.rawAdmin(uid, "DELETE", path, nil); st != 204 {
			t.Fatalf("DELETE %s: %d %s", path, st, reply)
		}
	}
	put(x, "/v1/users/me/secrets/S", can[0])
	put(x, "/v1/users/me/env/V", can[1])
	put(x, "/v1/users/me/env/M", can[2])
	put(0, "/v1/projects/p/env/P", can[3])
	put(0, "/v1/groups/g/env/G", can[4])
	put(x, "/v1/users/me/secrets/Q", can[5])
	// The same values through the CLI too (Go's HTTP client, other writes).
	a.runAs(x, x, strings.NewReplacer(`\n`, "\n").Replace(can[2]), nil, bins.envlet, "env", "set", "M2", "--value-stdin")
	del(x, "/v1/users/me/secrets/S")
	del(x, "/v1/users/me/env/V")
	del(x, "/v1/users/me/env/M")
	del(0, "/v1/projects/p/env/P")
	del(0, "/v1/groups/g/env/G")
	del(x, "/v1/users/me/secrets/Q")
	a.mustAs(x, "env", "delete", "M2")
	counts := countInMemory(t, a.cmd.Process.Pid, needles)
	t.Logf("copies after every value was deleted:\n%s", memReport(counts))
	for n, by := range counts {
		total := 0
		for _, k := range by {
			total += k
		}
		if total > 0 {
			t.Errorf("%q: %d copies left in the agent's memory (%v)", n, total, by)
		}
	}
}
