package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// allBytes is a file holding every byte value, twice, in both orders.
func allBytes() []byte {
	b := make([]byte, 0, 512)
	for i := 0; i < 256; i++ {
		b = append(b, byte(i))
	}
	for i := 255; i >= 0; i-- {
		b = append(b, byte(i))
	}
	return b
}

// TestSecretRoundTrip: text and file secrets come back exactly, through
// the CLI (--reveal, --decode) and through the workload socket.
func TestSecretRoundTrip(t *testing.T) {
	a := startAgent(t, "")
	uid := freeUID(t) // no passwd entry: the agent names it by its number
	a.cli("project", "create", "fraud")
	a.cli("project", "add-member", "fraud", uidName(uid))
	a.register(map[string]any{"id": "w", "user": uidName(uid), "project": "fraud", "match": map[string]any{"uid": uid}})
	bin := filepath.Join(a.dir, "all-bytes")
	if err := os.WriteFile(bin, allBytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	const text = "canary-secret-text-1 with spaces\nand a second line"
	run := func(stdin string, args ...string) result {
		t.Helper()
		r := a.runAs(uid, uid, stdin, nil, bins.envlet, args...)
		if r.code != 0 {
			t.Fatalf("envlet %v: %s", args, r)
		}
		return r
	}
	run(text+"\n", "secret", "create", "TXT", "--value-stdin")
	run("", "secret", "create", "BIN", "--file", bin)

	// Masked unless asked.
	if r := run("", "secret", "get", "TXT"); r.stdout != "********\n" || !strings.Contains(r.stderr, "note: secret TXT is masked") {
		t.Errorf("get without --reveal: %s", r)
	}
	if r := run("", "secret", "get", "--reveal", "TXT"); r.stdout != text+"\n" {
		t.Errorf("get --reveal TXT = %q", r.stdout)
	}
	if r := run("", "secret", "get", "--decode", "TXT"); r.stdout != text {
		t.Errorf("get --decode TXT = %q, want the text exactly", r.stdout)
	}
	// A file secret is stored base64: --reveal shows that, --decode the bytes.
	if r := run("", "secret", "get", "--reveal", "BIN"); r.stdout != base64.StdEncoding.EncodeToString(allBytes())+"\n" {
		t.Errorf("get --reveal BIN = %q, want the base64 of the file", r.stdout)
	}
	if r := run("", "secret", "get", "--decode", "BIN"); !bytes.Equal([]byte(r.stdout), allBytes()) {
		t.Errorf("get --decode BIN: %d bytes, not the file's %d", len(r.stdout), len(allBytes()))
	}
	// list: name, kind, size; never a value.
	var list []map[string]any
	r := run("", "secret", "list", "--json")
	json.Unmarshal([]byte(r.stdout), &list)
	if len(list) != 2 || list[0]["name"] != "BIN" || list[0]["kind"] != "file" || list[0]["size"] != float64(684) ||
		list[1]["kind"] != "text" || list[1]["size"] != float64(len(text)) || strings.Contains(r.stdout, `"value"`) {
		t.Errorf("secret list --json: %s", r.stdout)
	}
	if r := run("", "secret", "list"); !strings.Contains(r.stdout, "BIN   file  684") {
		t.Errorf("secret list:\n%s", r.stdout)
	}

	// The workload fetches both at run time: the file as its bytes.
	r = a.runAs(uid, uid, "", nil, bins.exec, "--get-secret", "BIN")
	if r.code != 0 || !bytes.Equal([]byte(r.stdout), allBytes()) {
		t.Errorf("envlet-exec --get-secret BIN: exit %d, %d bytes", r.code, len(r.stdout))
	}
	r = a.runAs(uid, uid, "", nil, bins.exec, "--get-secret", "TXT")
	if r.code != 0 || r.stdout != text {
		t.Errorf("envlet-exec --get-secret TXT: %s", r)
	}
	r = a.runAs(uid, uid, "", nil, bins.exec, "--get-secret", "NOPE")
	if r.code != 125 || !strings.Contains(r.stderr, "ENV_VAR_NOT_FOUND") {
		t.Errorf("envlet-exec --get-secret NOPE: %s", r)
	}

	// set replaces; create refuses an existing name; delete removes.
	run("", "secret", "set", "TXT", "canary-secret-text-2")
	if r := run("", "secret", "get", "--decode", "TXT"); r.stdout != "canary-secret-text-2" {
		t.Errorf("after set, TXT = %q", r.stdout)
	}
	if r := a.runAs(uid, uid, "", nil, bins.envlet, "secret", "create", "TXT", "x"); r.code != 1 || !strings.Contains(r.stderr, "ENV_VAR_ALREADY_EXISTS") {
		t.Errorf("create of an existing secret: %s", r)
	}
	run("", "secret", "delete", "TXT")
	if r := run("", "secret", "get", "TXT"); r.stdout != "" {
		t.Errorf("get of a deleted secret printed %q", r.stdout)
	}
	if r := a.runAs(uid, uid, "", nil, bins.envlet, "secret", "delete", "TXT"); r.code != 1 || !strings.Contains(r.stderr, "ENV_VAR_NOT_FOUND") {
		t.Errorf("delete of a missing secret: %s", r)
	}
	a.noCanary("canary-secret-text-1", "canary-secret-text-2")
}

// TestSecretLimits: 9000 characters is the most a stored value may have;
// a file counts by its base64. Refusals give the size, never the value.
func TestSecretLimits(t *testing.T) {
	a := startAgent(t, "")
	fill := func(n int) string { return "canary-limit-" + strings.Repeat("x", n-len("canary-limit-")) }
	file := func(n int) string {
		p := filepath.Join(a.dir, "f"+itoa(n))
		os.WriteFile(p, bytes.Repeat([]byte{0xff}, n), 0o644)
		return p
	}
	for _, tt := range []struct {
		name  string
		args  []string
		stdin string
		code  string // "" = accepted
		msg   string
	}{
		{"Text9000", []string{"secret", "create", "S", "--value-stdin"}, fill(9000), "", ""},
		{"Text9001", []string{"secret", "create", "S2", "--value-stdin"}, fill(9001), "SECRET_TOO_LARGE", "secret S2 is 9001 characters, over the limit of 9000"},
		{"Runes9000", []string{"secret", "create", "S3", "--value-stdin"}, strings.Repeat("é", 9000), "", ""},
		{"Runes9001", []string{"secret", "create", "S4", "--value-stdin"}, strings.Repeat("é", 9001), "SECRET_TOO_LARGE", "9001 characters"},
		{"File6750", []string{"secret", "create", "F", "--file", file(6750)}, "", "", ""}, // 9000 base64 characters
		{"File6751", []string{"secret", "create", "F2", "--file", file(6751)}, "", "SECRET_TOO_LARGE", "secret F2 is 9004 characters, over the limit of 9000"},
		{"Nul", []string{"secret", "create", "N", "--value-stdin"}, "canary-limit-a\x00b", "ENV_VAR_INVALID_VALUE", "NUL"},
		{"BadName", []string{"secret", "create", "1BAD", "v"}, "", "ENV_VAR_INVALID_NAME", ""},
		{"ProjectMissing", []string{"secret", "create", "--project", "nope", "S", "v"}, "", "PROJECT_NOT_FOUND", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rev := a.revision()
			r := a.runAs(0, 0, tt.stdin, nil, bins.envlet, tt.args...)
			if tt.code == "" {
				if r.code != 0 {
					t.Fatalf("refused: %s", r)
				}
				return
			}
			if r.code != 1 || !strings.HasPrefix(r.stderr, "envlet: "+tt.code+": ") || !strings.Contains(r.stderr, tt.msg) {
				t.Fatalf("want envlet: %s: …%s…, got %s", tt.code, tt.msg, r)
			}
			if a.revision() != rev {
				t.Error("a refused secret changed the store")
			}
		})
	}
	if got := a.cli("secret", "get", "--decode", "S"); got != fill(9000) {
		t.Errorf("the 9000-character secret came back as %d bytes", len(got))
	}
	if got := a.cli("secret", "get", "--decode", "F"); got != strings.Repeat("\xff", 6750) {
		t.Errorf("the 6750-byte file came back as %d bytes", len(got))
	}
	a.noCanary("canary-limit-")
}

// TestFromSecret: a variable set --from-secret takes, per workload, the
// workload user's private secret, else the project's; a change to the
// secret reaches the next launch; a secret the workload cannot read leaves
// the name out.
func TestFromSecret(t *testing.T) {
	a := startAgent(t, "DB_URL = platform-default")
	u := freeUIDs(t, 3)
	alice, bob, carol := u[0], u[1], u[2] // members alice and bob; carol is not one
	a.cli("project", "create", "fraud")
	a.cli("project", "add-member", "fraud", uidName(alice))
	a.cli("project", "add-member", "fraud", uidName(bob))
	for _, uid := range []uint32{alice, bob, carol} {
		id := map[uint32]string{alice: "wa", bob: "wb", carol: "wc"}[uid]
		a.register(map[string]any{"id": id, "user": uidName(uid), "project": "fraud", "match": map[string]any{"uid": uid}})
	}
	as := func(uid uint32, args ...string) {
		t.Helper()
		if r := a.cliAs(uid, args...); r.code != 0 {
			t.Fatalf("envlet %v as %d: %s", args, uid, r)
		}
	}
	as(bob, "secret", "create", "--project", "fraud", "DB_PASS", "canary-fs-project") // a member writes a project secret
	as(alice, "secret", "create", "DB_PASS", "canary-fs-alice")
	as(carol, "secret", "create", "DB_PASS", "canary-fs-carol")
	as(alice, "secret", "create", "API", "canary-fs-api")
	a.cli("project", "env", "set", "fraud", "DB_PASSWORD", "--from-secret", "DB_PASS")
	a.cli("project", "env", "set", "fraud", "DB_URL", "--from-secret", "NO_SUCH_SECRET")
	as(alice, "env", "set", "MY_API", "--from-secret", "API")

	launch := func(uid uint32) map[string]string {
		t.Helper()
		env, r := a.launchEnv(uid, uid)
		if r.code != 0 {
			t.Fatalf("launch as %d: %s", uid, r)
		}
		return env
	}
	// A project-layer reference reaches only the project's secret, never
	// a member's private one of the same name (issue 11 §1); alice's own
	// account layer reaches hers.
	checkEnv(t, launch(alice), map[string]string{"DB_PASSWORD": "canary-fs-project", "MY_API": "canary-fs-api", "DB_URL": "platform-default"})
	checkEnv(t, launch(bob), map[string]string{"DB_PASSWORD": "canary-fs-project", "MY_API": ""})
	// carol is not a member: her private secrets do not follow her into fraud.
	checkEnv(t, launch(carol), map[string]string{"DB_PASSWORD": "canary-fs-project"})
	a.waitLog("name=DB_URL", 1) // the missing secret is logged by variable name

	// The variable shows where it comes from, never a value.
	var vs []map[string]any
	json.Unmarshal([]byte(a.cli("project", "env", "list", "fraud", "--json", "--reveal")), &vs)
	if len(vs) != 2 || vs[0]["name"] != "DB_PASSWORD" || vs[0]["from_secret"] != "DB_PASS" || vs[0]["value"] != "********" {
		t.Errorf("project env list shows %v", vs)
	}
	if e := a.explainMap("--workload", "wa")["DB_PASSWORD"]; e.Value != "********" || !e.Masked || e.Layer != "project" {
		t.Errorf("explain DB_PASSWORD: %+v, want masked, from the project layer", e)
	}
	if e := a.explainMap("--workload", "wa")["DB_URL"]; e.Layer != "platform" {
		t.Errorf("explain DB_URL: %+v, want the platform value (the secret is missing)", e)
	}

	// A change to a secret reaches the next launch, with no re-registration.
	as(alice, "secret", "set", "DB_PASS", "canary-fs-alice-2")
	as(bob, "secret", "set", "--project", "fraud", "DB_PASS", "canary-fs-project-2")
	checkEnv(t, launch(alice), map[string]string{"DB_PASSWORD": "canary-fs-project-2"})
	checkEnv(t, launch(bob), map[string]string{"DB_PASSWORD": "canary-fs-project-2"})
	as(alice, "secret", "delete", "DB_PASS")
	checkEnv(t, launch(alice), map[string]string{"DB_PASSWORD": "canary-fs-project-2"})

	// --get-secret: a workload reads its own user's and its project's
	// secrets, and nobody else's.
	for _, tt := range []struct {
		uid        uint32
		name, want string
	}{
		{alice, "API", "canary-fs-api"},
		{alice, "DB_PASS", "canary-fs-project-2"},
		{bob, "API", ""},                          // alice's private secret
		{carol, "DB_PASS", "canary-fs-project-2"}, // carol's own is not hers in fraud
	} {
		r := a.runAs(tt.uid, tt.uid, "", nil, bins.exec, "--get-secret", tt.name)
		switch {
		case tt.want == "" && (r.code != 125 || !strings.Contains(r.stderr, "ENV_VAR_NOT_FOUND")):
			t.Errorf("uid %d --get-secret %s: %s; want ENV_VAR_NOT_FOUND", tt.uid, tt.name, r)
		case tt.want != "" && (r.code != 0 || r.stdout != tt.want):
			t.Errorf("uid %d --get-secret %s: %s; want %q", tt.uid, tt.name, r, tt.want)
		}
	}
	a.noCanary("canary-fs-")
}

// TestMembershipChanges: removing a member stops their account variables
// and their private secrets at the next launch; the project's and its
// groups' variables stay.
func TestMembershipChanges(t *testing.T) {
	a := startAgent(t, "")
	uid := freeUID(t)
	a.cli("project", "create", "fraud")
	a.cli("project", "add-member", "fraud", uidName(uid))
	a.cli("group", "create", "base")
	a.cli("group", "set", "base", "FROM_GROUP", "g")
	a.cli("project", "groups", "fraud", "base")
	a.cli("project", "env", "set", "fraud", "FROM_PROJECT", "p")
	a.register(map[string]any{"id": "w", "user": uidName(uid), "project": "fraud", "match": map[string]any{"uid": uid}})
	a.cliAs(uid, "env", "set", "MINE", "m")
	a.cliAs(uid, "secret", "create", "TOKEN", "canary-member-token")
	// Through the member's own account layer: the only layer through
	// which a private secret reaches a workload (issue 11 §1).
	a.cliAs(uid, "env", "set", "TOKEN", "--from-secret", "TOKEN")

	env, _ := a.launchEnv(uid, uid)
	checkEnv(t, env, map[string]string{"MINE": "m", "TOKEN": "canary-member-token", "FROM_GROUP": "g", "FROM_PROJECT": "p"})
	a.cli("project", "remove-member", "fraud", uidName(uid))
	env, _ = a.launchEnv(uid, uid)
	checkEnv(t, env, map[string]string{"MINE": "", "TOKEN": "", "FROM_GROUP": "g", "FROM_PROJECT": "p"})
	if r := a.runAs(uid, uid, "", nil, bins.exec, "--get-secret", "TOKEN"); r.code != 125 {
		t.Errorf("a removed member's workload still reads their private secret: %s", r)
	}
	a.cli("project", "add-member", "--owner", "fraud", uidName(uid))
	env, _ = a.launchEnv(uid, uid)
	checkEnv(t, env, map[string]string{"MINE": "m", "TOKEN": "canary-member-token"})
	a.noCanary("canary-member-token")
}

// TestProjectDeleteTakesSecrets: a project's secrets go with it.
func TestProjectDeleteTakesSecrets(t *testing.T) {
	a := startAgent(t, "")
	a.cli("project", "create", "fraud")
	a.cli("secret", "create", "--project", "fraud", "S", "canary-deleted-project")
	a.cli("project", "delete", "fraud")
	a.cli("project", "create", "fraud")
	if out := a.cli("secret", "list", "--project", "fraud", "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("a re-created project found old secrets: %s", out)
	}
	a.noCanary("canary-deleted-project")
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}
