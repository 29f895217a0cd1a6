package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestAgentUnderUnitCapabilities runs the agent with only the capabilities
// systemd/envletd.service leaves it (CapabilityBoundingSet=, read from the
// unit) and NoNewPrivileges, through setpriv, and drives everything that
// needs a privilege: mounts given to a workload uid, rewritten and removed;
// a token file given to its uid and read back after a restart; a --watch
// launcher. systemd cannot run here, so this is how the unit's capability
// set is known to be enough.
func TestAgentUnderUnitCapabilities(t *testing.T) {
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("setpriv (util-linux) not found; CI must have it")
		}
		t.Skip("setpriv (util-linux) not found")
	}
	caps := unitCapabilities(t, "../systemd/envletd.service")
	a := startAgent(t, "PATH = /usr/bin:/bin")
	a.wrap = []string{setpriv, "--bounding-set=-all," + caps, "--inh-caps=-all", "--no-new-privs", "--"}
	a.restart()
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(a.cmd.Process.Pid) + "/status"); err == nil {
		t.Logf("agent capabilities: %s", capLine(string(b), "CapBnd"))
	}

	a.cli("project", "create", "p")
	a.cli("project", "add-member", "p", "u")
	a.cli("env", "set", "--user", "u", "V", "one")
	a.register(map[string]any{"id": "m", "user": "u", "project": "p", "match": map[string]any{"uid": a.uid("m")}, "mount": true})
	out := a.cli("workload", "register", writeReg(t, a, fmt.Sprintf(`{"id":"tok","user":"u","project":"p","match":{"uid":%d,"token":true}}`, a.uid("tok"))))
	tokenFile := ""
	for line := range strings.Lines(out) {
		if f, ok := strings.CutPrefix(strings.TrimSpace(line), "token file: "); ok {
			tokenFile = f
		}
	}
	if tokenFile == "" {
		t.Fatalf("no token file in %q", out)
	}

	// The mount belongs to the workload uid and follows a change.
	env := filepath.Join(a.dir, "mounts", "m", "env")
	waitMount(t, a, env, `V="one"`)
	checkOwner(t, env, a.uid("m"), 0o400)
	checkOwner(t, filepath.Dir(mustEval(t, env)), a.uid("m"), 0o500)
	a.cli("env", "set", "--user", "u", "V", "two")
	waitMount(t, a, env, `V="two"`)

	// The token file belongs to the workload uid, and the agent reads it back
	// after a restart: the same token still works.
	checkOwner(t, tokenFile, a.uid("tok"), 0o400)
	before, _ := os.ReadFile(tokenFile)
	a.restart()
	after, _ := os.ReadFile(tokenFile)
	if string(before) != string(after) {
		t.Error("the token file changed across a restart")
	}
	if got, r := a.launchEnv(a.uid("tok"), a.uid("tok"), "ENVLET_TOKEN_FILE="+tokenFile); got["V"] != "two" {
		t.Fatalf("launch with the token after the restart: %v %s", got, r)
	}

	// A watching launcher is restarted on a change.
	p := startWatch(t, a, a.uid("m"), append([]string{"--watch", "--"}, printer...)...)
	p.expect(t, "start ")
	a.cli("env", "set", "--user", "u", "V", "three")
	if v := p.expect(t, "start "); !strings.HasSuffix(v, " three") {
		t.Fatalf("after the change: %q", v)
	}
	waitMount(t, a, env, `V="three"`)

	// Deregistration takes the mount back and removes it.
	a.cli("workload", "delete", "m")
	a.waitLog("mount removed: workload=m", 1)
	if _, err := os.Lstat(filepath.Join(a.dir, "mounts", "m")); !os.IsNotExist(err) {
		t.Fatalf("the mount is still there after deregistration: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(a.dir, "mounts", ".m")); !os.IsNotExist(err) {
		t.Fatalf("the mount's versions are still there after deregistration: %v", err)
	}
	for _, bad := range []string{"permission denied", "operation not permitted", "[ERROR]"} {
		if strings.Contains(a.log.String(), bad) {
			t.Errorf("the agent logged %q with the unit's capabilities:\n%s", bad, a.log.String())
		}
	}
}

// unitCapabilities returns the unit's CapabilityBoundingSet= as setpriv
// wants it: +chown,+dac_read_search,...
func unitCapabilities(t *testing.T, unit string) string {
	t.Helper()
	f, err := os.Open(unit)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var caps []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapabilityBoundingSet="); ok {
			for _, c := range strings.Fields(v) {
				caps = append(caps, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
			}
		}
	}
	if len(caps) == 0 {
		t.Fatalf("%s has no CapabilityBoundingSet=", unit)
	}
	return strings.Join(caps, ",")
}

func writeReg(t *testing.T, a *agentProc, body string) string {
	t.Helper()
	p := filepath.Join(a.dir, "reg.json")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitMount waits for the agent to log a mount written for the workload
// whose env file is path, until the file holds want.
func waitMount(t *testing.T, a *agentProc, path, want string) {
	t.Helper()
	for n := 1; ; n++ {
		if b, err := os.ReadFile(path); err == nil && strings.Contains(string(b), want) {
			return
		}
		a.waitLog("mount written: workload=", n)
	}
}

func mustEval(t *testing.T, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func checkOwner(t *testing.T, path string, uid uint32, mode os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != uid || fi.Mode().Perm() != mode {
		t.Errorf("%s: owner %d mode %o, want %d %o", path, st.Uid, fi.Mode().Perm(), uid, mode)
	}
}

func capLine(status, name string) string {
	for line := range strings.Lines(status) {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// The example registrations shipped beside the units and the container
// example are ones the agent accepts.
func TestExampleRegistrations(t *testing.T) {
	a := startAgent(t, "")
	a.cli("project", "create", "fraud")
	a.cli("project", "add-member", "fraud", "alice")
	files, _ := filepath.Glob("../systemd/examples/workloads.d/*.json")
	files = append(files, "../packaging/container/registration-uid.json")
	if len(files) < 4 {
		t.Fatalf("found only %v", files)
	}
	for _, f := range files {
		abs, _ := filepath.Abs(f)
		if out := a.cli("workload", "register", abs); !strings.HasPrefix(out, "registered ") {
			t.Errorf("%s: %q", f, out)
		}
	}
}
