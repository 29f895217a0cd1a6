package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestKill9KeepsAcknowledgedWrites: every write the CLI saw succeed is there
// after the agent is killed with SIGKILL and started again.
func TestKill9KeepsAcknowledgedWrites(t *testing.T) {
	a := startAgent(t, "")
	a.cli("project", "create", "p")
	for i := 0; i < 20; i++ {
		a.cli("env", "set", "--user", "alice", fmt.Sprintf("K%d", i), fmt.Sprintf("v%d", i))
	}
	a.cli("project", "env", "set", "p", "PV", "pv")
	a.kill()
	a.start()
	for i := 0; i < 20; i++ {
		if got := a.cli("env", "get", "--user", "alice", fmt.Sprintf("K%d", i)); got != fmt.Sprintf("v%d\n", i) {
			t.Fatalf("K%d = %q after kill -9", i, got)
		}
	}
	if !strings.Contains(a.cli("project", "env", "list", "p"), "PV=pv") {
		t.Fatal("project variable lost after kill -9")
	}
}

// TestCanaries plants a canary in every layer and searches everything the
// agent, CLI and launcher printed, the audit log and the state directory.
func TestCanaries(t *testing.T) {
	a := startAgent(t, "PLATFORM_TOKEN = canary-platform-3f9a")
	canaries := []string{"canary-account-77c1", "canary-project-19be", "canary-runtime-5d02", "canary-exec-a4e8", "canary-secretflag-0b6d", "canary-platform-3f9a"}
	a.cli("project", "create", "p")
	a.cli("project", "add-member", "p", "alice")
	a.cli("env", "set", "--user", "alice", "DB_PASSWORD", canaries[0])
	a.cli("project", "env", "set", "p", "API_TOKEN_X", canaries[1])
	a.cli("env", "set", "--user", "alice", "PLAIN", canaries[4], "--secret")
	a.register(map[string]any{"id": "c1", "user": "alice", "project": "p", "match": map[string]any{"uid": a.uid("c1")},
		"runtime": map[string]string{"RT_SECRET": canaries[2]}, "execution": map[string]string{"EXEC_KEY": canaries[3]}})
	os.Remove(filepath.Join(a.dir, "reg-c1.json")) // the registration file itself holds values by design

	env, r := a.launchEnv(a.uid("c1"), a.uid("c1"))
	if r.code != 0 {
		t.Fatal(r)
	}
	for _, c := range canaries {
		found := false
		for _, v := range env {
			found = found || v == c
		}
		if !found {
			t.Fatalf("the workload did not get %s", c)
		}
	}
	// Every listing and explain, without --reveal.
	a.cli("env", "list", "--user", "alice")
	a.cli("env", "list", "--user", "alice", "--json")
	a.cli("env", "get", "--user", "alice", "DB_PASSWORD")
	a.cli("env", "get", "--user", "alice", "PLAIN")
	a.cli("project", "env", "list", "p")
	a.cli("project", "env", "list", "p", "--json")
	a.cli("explain", "--workload", "c1")
	a.cli("explain", "--workload", "c1", "--json")
	a.cli("explain", "--user", "alice", "--project", "p")
	a.cli("workload", "list", "--json")
	a.cli("status")
	// Errors around values: a refused duplicate, a value too large.
	a.cliAs(0, "env", "create", "--user", "alice", "DB_PASSWORD", canaries[0])
	a.runAs(0, 0, canaries[0]+strings.Repeat("y", 40000), nil, bins.envlet, "env", "set", "--user", "alice", "HUGE", "--value-stdin")
	a.runAs(0, 0, "", []string{"ENVLET_SOCKET=/nonexistent"}, bins.exec, "--", "env")
	// Groups, secrets, and a workload's token (a credential: searched like a
	// value), through listings, identity refusals and bad input.
	more := []string{"canary-group-2d7f", "canary-secret-8e41"}
	a.cli("group", "create", "g")
	a.cli("group", "set", "g", "GROUP_KEY", more[0])
	a.cli("group", "assign", "g", "p")
	a.cli("secret", "create", "--project", "p", "S", more[1])
	a.cli("group", "list")
	a.cli("group", "show", "g")
	a.cli("secret", "list", "--project", "p")
	a.cli("secret", "get", "--project", "p", "S")
	a.register(map[string]any{"id": "tok", "user": "alice", "project": "p", "match": map[string]any{"token": true, "uid": a.uid("tok")}})
	tokFile := filepath.Join(a.dir, "tokens", "tok")
	tok, err := os.ReadFile(tokFile)
	if err != nil || len(strings.TrimSpace(string(tok))) != 64 {
		t.Fatalf("token file: %v", err)
	}
	more = append(more, strings.TrimSpace(string(tok)))
	if env, r := a.launchEnv(a.uid("tok"), a.uid("tok"), "ENVLET_TOKEN_FILE="+tokFile); env["GROUP_KEY"] != more[0] {
		t.Fatalf("token workload: %s", r)
	}
	a.runAs(a.uid("tok"), a.uid("tok"), "", nil, bins.exec, "--", "env") // refused: no token
	os.WriteFile(filepath.Join(a.dir, "bad-token"), []byte(strings.Repeat("0", 64)), 0o644)
	a.runAs(a.uid("tok"), a.uid("tok"), "", []string{"ENVLET_TOKEN_FILE=" + filepath.Join(a.dir, "bad-token")}, bins.exec, "--", "env")
	a.cli("workload", "list")
	a.cli("workload", "list", "--json")
	a.cli("whoami")
	a.runAs(0, 0, `{"id":"bad","user":"u","project":"p","match":{"uid":1},"runtime":{"A":"`+more[1]+`"},"bogus":1}`, nil, bins.envlet, "workload", "register", "-")
	// The agent's environment and command line.
	pid := a.cmd.Process.Pid
	for _, f := range []string{"environ", "cmdline"} {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, f))
		for _, c := range append(canaries[:5:5], more...) {
			if strings.Contains(string(b), c) {
				t.Errorf("canary in /proc/agent/%s", f)
			}
		}
	}
	// --reveal is the one way to see them.
	if out := a.runAs(0, 0, "", nil, bins.envlet, "env", "get", "--user", "alice", "DB_PASSWORD", "--reveal").stdout; out != canaries[0]+"\n" {
		t.Fatalf("get --reveal = %q", out)
	}
	a.stop()
	// Search with the config file aside: the platform default is in it by design.
	os.Remove(tokFile) // the token file holds the token by design
	a.noCanary(append(canaries[:5:5], more...)...)
	for _, c := range append(canaries, more...) {
		if strings.Contains(a.log.String(), c) {
			t.Errorf("canary %s in the agent log", c)
		}
	}
}

// TestDevMode runs envletd -dev as an unprivileged user: it prints the
// exports, makes the starter an admin, and lets other users reach the
// workload socket.
func TestDevMode(t *testing.T) {
	u := freeUIDs(t, 2)
	devUID, otherUID := u[0], u[1]
	a := startDevAgent(t, devUID)
	if a.workSock != filepath.Join(a.dir, "d", "workload.sock") || a.adminSock != filepath.Join(a.dir, "d", "admin.sock") {
		t.Fatalf("exports: ENVLET_SOCKET=%s ENVLET_ADMIN_SOCKET=%s; log:\n%s", a.workSock, a.adminSock, a.log.String())
	}
	// The starter is admin.
	if r := a.cliAs(devUID, "project", "create", "p"); r.code != 0 {
		t.Fatalf("dev starter is not admin: %s", r)
	}
	a.cliAs(devUID, "project", "add-member", "p", uidName(otherUID))
	if r := a.cliAs(otherUID, "project", "create", "q"); r.code == 0 {
		t.Fatalf("another user is admin in -dev: %s", r)
	}
	// Another user sets their own variable and runs a workload.
	if r := a.cliAs(otherUID, "env", "set", "OTHER_VAR", "x"); r.code != 0 {
		t.Fatal(r)
	}
	reg := fmt.Sprintf(`{"id":"w","user":"%d","project":"p","match":{"uid":%d}}`, otherUID, otherUID)
	if r := a.runAs(devUID, devUID, reg, nil, bins.envlet, "workload", "register", "-"); r.code != 0 {
		t.Fatal(r)
	}
	if env, r := a.launchEnv(otherUID, otherUID); env["OTHER_VAR"] != "x" {
		t.Fatalf("workload in -dev: %s", r)
	}
	// PR_SET_DUMPABLE 0: the kernel hands the agent's /proc files to root,
	// so the user who started it cannot read its memory either.
	if fi, err := os.Stat(fmt.Sprintf("/proc/%d/mem", a.cmd.Process.Pid)); err != nil || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("/proc/agent/mem is not root-owned: the agent is dumpable")
	}
	for _, p := range []string{"state", "keyring"} {
		fi, err := os.Stat(filepath.Join(a.dir, "d", p))
		if err != nil || fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s is not private: %v %v", p, fi.Mode(), err)
		}
	}
}
