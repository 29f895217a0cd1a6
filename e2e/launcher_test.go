package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLauncherExitCodes(t *testing.T) {
	a := startAgent(t, "PATH = /usr/bin:/bin")
	a.cli("project", "create", "p")
	bindir := filepath.Join(a.dir, "bin")
	os.Mkdir(bindir, 0o755)
	os.WriteFile(filepath.Join(bindir, "only-on-agent-path"), []byte("#!/bin/sh\necho found-it\nexit 3\n"), 0o755)
	os.WriteFile(filepath.Join(bindir, "not-executable"), []byte("#!/bin/sh\n"), 0o644)
	a.register(map[string]any{"id": "ok", "user": "u", "project": "p", "match": map[string]any{"uid": a.uid("ok")},
		"runtime": map[string]string{"PATH": bindir + ":/usr/bin:/bin"}})
	a.register(map[string]any{"id": "twin-a", "user": "u", "project": "p", "match": map[string]any{"uid": a.uid("twin")}})
	a.register(map[string]any{"id": "twin-b", "user": "u", "project": "p", "match": map[string]any{"gid": a.uid("twin")}})

	for _, tt := range []struct {
		name     string
		uid, gid uint32
		args     []string
		env      []string
		code     int
		stderr   string
		stdout   string
	}{
		{"ProgramOnMergedPath", a.uid("ok"), a.uid("ok"), []string{"--", "only-on-agent-path"}, nil, 3, "", "found-it\n"},
		{"NotFound", a.uid("ok"), a.uid("ok"), []string{"--", "no-such-program"}, nil, 127, "envlet-exec: NOT_FOUND", ""},
		{"NotExecutable", a.uid("ok"), a.uid("ok"), []string{"--", filepath.Join(bindir, "not-executable")}, nil, 126, "envlet-exec: NOT_EXECUTABLE", ""},
		{"Unregistered", a.uid("unregistered"), a.uid("unregistered"), []string{"--", "true"}, nil, 125, "WORKLOAD_UNKNOWN", ""},
		{"Ambiguous", a.uid("twin"), a.uid("twin"), []string{"--", "true"}, nil, 125, "WORKLOAD_AMBIGUOUS", ""},
		{"AgentUnreachable", a.uid("ok"), a.uid("ok"), []string{"--", "true"}, []string{"ENVLET_SOCKET=" + filepath.Join(a.dir, "nope.sock")}, 125, "AGENT_UNREACHABLE", ""},
		{"Usage", a.uid("ok"), a.uid("ok"), []string{"--no-such-flag", "--", "true"}, nil, 125, "USAGE", ""},
		{"NoProgram", a.uid("ok"), a.uid("ok"), nil, nil, 125, "USAGE", ""},
		{"ExitCodePassedThrough", a.uid("ok"), a.uid("ok"), []string{"--", "sh", "-c", "exit 42"}, nil, 42, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := a.runAs(tt.uid, tt.gid, "", tt.env, bins.exec, tt.args...)
			if r.code != tt.code || !strings.Contains(r.stderr, tt.stderr) || (tt.stdout != "" && r.stdout != tt.stdout) {
				t.Fatalf("want exit %d, stderr ~%q, stdout %q; got %s", tt.code, tt.stderr, tt.stdout, r)
			}
		})
	}
	// Refusals are audited with the peer's pid, uid and the reason.
	b, _ := os.ReadFile(a.audit)
	if !strings.Contains(string(b), `"action":"refuse"`) || !strings.Contains(string(b), `"uid":`+uidName(a.uid("unregistered"))) {
		t.Errorf("audit log lacks the refusal of uid "+uidName(a.uid("unregistered"))+":\n%s", b)
	}
}

// TestWorkloadsDir: a file dropped into workloads.d registers a workload, a
// change applies, a removal deregisters — with no restart.
func TestWorkloadsDir(t *testing.T) {
	a := startAgent(t, "")
	a.cli("project", "create", "p")
	write := func(name, body string) {
		t.Helper()
		// Write then rename, as a config manager would.
		tmp := filepath.Join(a.workDir, "."+name+".tmp")
		if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(a.workDir, name)); err != nil {
			t.Fatal(err)
		}
	}
	write("svc.json", `{"id":"svc","user":"u","project":"p","match":{"uid":`+uidName(a.uid("svc"))+`},"runtime":{"MODE":"one"}}`)
	a.waitLog("workload registered: workload=svc", 1)
	env, r := a.launchEnv(a.uid("svc"), a.uid("svc"))
	if env["MODE"] != "one" {
		t.Fatalf("after the file appeared: %v %s", env, r)
	}
	write("svc.json", `{"id":"svc","user":"u","project":"p","match":{"uid":`+uidName(a.uid("svc"))+`},"runtime":{"MODE":"two"}}`)
	a.waitLog("workload registered: workload=svc", 2)
	if env, _ = a.launchEnv(a.uid("svc"), a.uid("svc")); env["MODE"] != "two" {
		t.Fatalf("after the change MODE = %q", env["MODE"])
	}
	// A broken file keeps the version in force and says why.
	write("svc.json", `{"id":"svc","user":"u",`)
	a.waitLog("workload file refused", 1)
	if env, _ = a.launchEnv(a.uid("svc"), a.uid("svc")); env["MODE"] != "two" {
		t.Fatalf("after a broken write MODE = %q", env["MODE"])
	}
	var list []map[string]any
	json.Unmarshal([]byte(a.cli("workload", "list", "--json")), &list)
	if len(list) != 1 || list[0]["source"] != "file" {
		t.Fatalf("workload list: %v", list)
	}
	// The API cannot delete what a file holds.
	if r := a.cliAs(0, "workload", "delete", "svc"); r.code == 0 {
		t.Fatalf("deleting a file registration through the API: %s", r)
	}
	os.Remove(filepath.Join(a.workDir, "svc.json"))
	a.waitLog("workload removed: workload=svc", 1)
	if _, r = a.launchEnv(a.uid("svc"), a.uid("svc")); r.code != 125 || !strings.Contains(r.stderr, "WORKLOAD_UNKNOWN") {
		t.Fatalf("after removal: %s", r)
	}
}

func TestWorkloadAPIRegistration(t *testing.T) {
	a := startAgent(t, "")
	a.cli("project", "create", "p")
	a.register(map[string]any{"id": "api1", "user": "u", "project": "p", "match": map[string]any{"uid": a.uid("api1"), "gid": a.uid("api1")},
		"execution": map[string]string{"RUN": "1"}})
	if env, r := a.launchEnv(a.uid("api1"), a.uid("api1")); env["RUN"] != "1" {
		t.Fatalf("api registration: %s", r)
	}
	// gid must match too.
	if _, r := a.launchEnv(a.uid("api1"), a.uid("api1-othergid")); r.code != 125 {
		t.Fatalf("wrong gid was served: %s", r)
	}
	// Duplicate id; bad documents.
	p := filepath.Join(a.dir, "reg-api1.json")
	if r := a.cliAs(0, "workload", "register", p); r.code == 0 || !strings.Contains(r.stderr, "ALREADY_EXISTS") {
		t.Fatalf("duplicate id: %s", r)
	}
	for _, doc := range []string{
		`{"id":"x","user":"u","project":"p","match":{}}`,
		`{"id":"x","user":"u","project":"p","match":{"uid":1},"exectuion":{}}`,
		`{"id":"../x","user":"u","project":"p","match":{"uid":1}}`,
		`{"id":"x","user":"u","project":"p","match":{"uid":"one"}}`,
		`not json`,
	} {
		if r := a.runAs(0, 0, doc, nil, bins.envlet, "workload", "register", "-"); r.code == 0 || !strings.Contains(r.stderr, "envlet: ") {
			t.Errorf("bad registration %s accepted: %s", doc, r)
		}
	}
	a.restart()
	if env, r := a.launchEnv(a.uid("api1"), a.uid("api1")); env["RUN"] != "1" {
		t.Fatalf("api registration lost across a restart: %s", r)
	}
	a.cli("workload", "delete", "api1")
	if _, r := a.launchEnv(a.uid("api1"), a.uid("api1")); r.code != 125 {
		t.Fatalf("deleted workload still served: %s", r)
	}
}

// TestStaleWorkloads: workload list tells who runs an old environment.
func TestStaleWorkloads(t *testing.T) {
	a := startAgent(t, "")
	a.cli("project", "create", "p")
	a.cli("project", "add-member", "p", "u")
	a.register(map[string]any{"id": "s1", "user": "u", "project": "p", "match": map[string]any{"uid": a.uid("s1")}})
	stale := func() (float64, bool) {
		var list []map[string]any
		json.Unmarshal([]byte(a.cli("workload", "list", "--json")), &list)
		return list[0]["revision"].(float64), list[0]["stale"].(bool)
	}
	a.launchEnv(a.uid("s1"), a.uid("s1"))
	if _, s := stale(); s {
		t.Fatal("stale right after being served")
	}
	a.cli("env", "set", "--user", "other", "X", "1") // does not touch s1
	if _, s := stale(); s {
		t.Fatal("stale after a change that does not affect it")
	}
	a.cli("env", "set", "--user", "u", "X", "1")
	if _, s := stale(); !s {
		t.Fatal("not stale after its user's variable changed")
	}
	a.launchEnv(a.uid("s1"), a.uid("s1"))
	if _, s := stale(); s {
		t.Fatal("still stale after being served again")
	}
}
