package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/envlet/envlet/agent/wire"
)

// Workload identity against the real agent: processes moved into real
// cgroups (the named v1 systemd hierarchy and the v2 one on this hybrid
// host, or the one v2 hierarchy elsewhere), tokens, and a recycled pid.

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// cgroupRoots finds where the hierarchies the agent reads are mounted:
// the v1 name=systemd one (hybrid and legacy hosts) and the v2 one.
func cgroupRoots(t *testing.T) (v1, v2 string) {
	t.Helper()
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return "", "/sys/fs/cgroup" // unified host
	}
	if _, err := os.Stat("/sys/fs/cgroup/systemd/cgroup.procs"); err == nil {
		v1 = "/sys/fs/cgroup/systemd"
	}
	if _, err := os.Stat("/sys/fs/cgroup/unified/cgroup.procs"); err == nil {
		v2 = "/sys/fs/cgroup/unified"
	}
	if v1 == "" && v2 == "" {
		t.Skip("no cgroup hierarchy the agent reads is mounted here")
	}
	return v1, v2
}

// makeCgroup creates the cgroup rel (e.g. /system.slice/x.service) under
// root, skipping the test where the machine does not allow it, and removes
// what it created when the test ends.
func makeCgroup(t *testing.T, root, rel string) string {
	t.Helper()
	dir := root
	var created []string
	for _, c := range strings.Split(strings.Trim(rel, "/"), "/") {
		dir = filepath.Join(dir, c)
		if err := os.Mkdir(dir, 0o755); err == nil {
			created = append(created, dir)
		} else if !errors.Is(err, os.ErrExist) {
			t.Skipf("this machine does not let root create cgroup %s (%v): the cgroup tests need a writable %s", dir, err, root)
		}
	}
	t.Cleanup(func() {
		for i := len(created) - 1; i >= 0; i-- {
			// A cgroup can be removed once its processes are gone; the
			// kernel may take a moment to reap the last one.
			for try := 0; try < 50; try++ {
				if err := os.Remove(created[i]); err == nil || !errors.Is(err, syscall.EBUSY) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	})
	return dir
}

// makeCgroups is makeCgroup under each root cgroupRoots finds.
func makeCgroups(t *testing.T, rel string) []string {
	t.Helper()
	v1, v2 := cgroupRoots(t)
	var dirs []string
	for _, root := range []string{v1, v2} {
		if root != "" {
			dirs = append(dirs, makeCgroup(t, root, rel))
		}
	}
	return dirs
}

// launchIn runs envlet-exec as uid inside the given cgroup directories: a
// shell as uid waits on its stdin, the test (root) moves it into each
// cgroup, then it execs the launcher (same pid, same cgroups).
func (a *agentProc) launchIn(uid uint32, dirs []string, env []string, args ...string) result {
	a.t.Helper()
	cmd := exec.Command("/bin/sh", append([]string{"-c", `read go && exec "$0" "$@"`, bins.exec}, args...)...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=/", "ENVLET_SOCKET=" + a.workSock}, env...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	stdin, err := cmd.StdinPipe()
	if err != nil {
		a.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	for _, d := range dirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			a.t.Skipf("this machine does not let root move a process into %s: %v", d, err)
		}
	}
	stdin.Write([]byte("go\n"))
	stdin.Close()
	err = cmd.Wait()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		a.t.Fatal(err)
	}
	a.record(fmt.Sprintf("envlet-exec in %v (uid %d)", dirs, uid), r.stderr)
	return r
}

// envOf reads `env` output into a map.
func envOf(out string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m
}

// TestIdentitySystemdUnit: systemd_unit matches the unit of the peer's
// cgroup (and any cgroup below it); every other field given must match too.
func TestIdentitySystemdUnit(t *testing.T) {
	unit := "envlet-e2e-" + randHex(4) + ".service"
	dirs := makeCgroups(t, "/system.slice/"+unit)
	subDirs := makeCgroups(t, "/system.slice/"+unit+"/payload")
	a := startAgent(t, "")
	a.cli("project", "create", "p")
	a.register(map[string]any{"id": "by-unit", "user": "u", "project": "p", "match": map[string]any{"systemd_unit": unit},
		"runtime": map[string]string{"WHO": "by-unit"}})
	a.register(map[string]any{"id": "unit-and-uid", "user": "u", "project": "p", "match": map[string]any{"systemd_unit": "other-" + unit, "uid": a.uid("unit-and-uid")}})

	r := a.launchIn(a.uid("unit"), dirs, nil, "--", "env")
	if env := envOf(r.stdout); r.code != 0 || env["WHO"] != "by-unit" {
		t.Fatalf("a process of %s: %s", unit, r)
	}
	if r := a.launchIn(a.uid("unit"), subDirs, nil, "--", "env"); r.code != 0 || envOf(r.stdout)["WHO"] != "by-unit" {
		t.Fatalf("a process in a cgroup below %s: %s", unit, r)
	}
	// Outside the unit: refused, and told what the agent saw.
	r = a.launchIn(a.uid("unit"), nil, nil, "--", "env")
	if r.code != 125 || !strings.Contains(r.stderr, "WORKLOAD_UNKNOWN") || !strings.Contains(r.stderr, "uid "+uidName(a.uid("unit"))+" gid "+uidName(a.uid("unit"))+", cgroup /") || !strings.Contains(r.stderr, "no token") {
		t.Fatalf("outside the unit: %s", r)
	}
	// uid and unit: both must match.
	otherDirs := makeCgroups(t, "/system.slice/other-"+unit)
	if r := a.launchIn(a.uid("other-unit"), otherDirs, nil, "--", "env"); r.code != 125 || !strings.Contains(r.stderr, "WORKLOAD_UNKNOWN") || !strings.Contains(r.stderr, "unit other-"+unit) {
		t.Fatalf("right unit, wrong uid: %s", r)
	}
	if r := a.launchIn(a.uid("unit-and-uid"), otherDirs, nil, "--", "true"); r.code != 0 {
		t.Fatalf("right unit, right uid: %s", r)
	}
}

// TestIdentityContainer: a docker-style cgroup (/docker/ID). On this
// hybrid host it is made the way docker's cgroupfs driver leaves it: the
// container in the v1 name=systemd hierarchy, the v2 line still the shim's
// service; container_id matches the full id and its 12-digit short form,
// and the shim's unit does not claim the container.
func TestIdentityContainer(t *testing.T) {
	v1, v2 := cgroupRoots(t)
	id := randHex(32)
	shim := "envlet-e2e-shim-" + randHex(4) + ".service"
	var dirs []string
	if v1 != "" {
		dirs = append(dirs, makeCgroup(t, v1, "/docker/"+id))
		if v2 != "" {
			dirs = append(dirs, makeCgroup(t, v2, "/system.slice/"+shim))
		}
	} else {
		dirs = append(dirs, makeCgroup(t, v2, "/docker/"+id))
	}
	a := startAgent(t, "")
	a.cli("project", "create", "p")
	a.register(map[string]any{"id": "ctr", "user": "u", "project": "p", "match": map[string]any{"container_id": id},
		"runtime": map[string]string{"WHO": "container"}})
	a.register(map[string]any{"id": "shim", "user": "u", "project": "p", "match": map[string]any{"systemd_unit": shim}})
	r := a.launchIn(a.uid("container"), dirs, nil, "--", "env")
	if env := envOf(r.stdout); r.code != 0 || env["WHO"] != "container" {
		t.Fatalf("the container's process: %s", r)
	}
	a.cli("workload", "delete", "ctr")
	a.register(map[string]any{"id": "short", "user": "u", "project": "p", "match": map[string]any{"container_id": id[:12]},
		"runtime": map[string]string{"WHO": "short"}})
	if r := a.launchIn(a.uid("container"), dirs, nil, "--", "env"); r.code != 0 || envOf(r.stdout)["WHO"] != "short" {
		t.Fatalf("short id: %s", r)
	}
	// Another container's id does not match, and the refusal names the
	// container the agent saw.
	a.cli("workload", "delete", "short")
	a.register(map[string]any{"id": "other", "user": "u", "project": "p", "match": map[string]any{"container_id": randHex(32)}})
	if r := a.launchIn(a.uid("container"), dirs, nil, "--", "env"); r.code != 125 || !strings.Contains(r.stderr, "container "+id) {
		t.Fatalf("another container's registration: %s", r)
	}
}

// TestIdentityCgroupPrefix: cgroup matches a path prefix on a component
// boundary.
func TestIdentityCgroupPrefix(t *testing.T) {
	base := "/envlet-e2e-" + randHex(4)
	in := makeCgroups(t, base+"/jobs/42")
	beside := makeCgroups(t, base+"x/jobs/42")
	a := startAgent(t, "")
	a.cli("project", "create", "p")
	a.register(map[string]any{"id": "prefix", "user": "u", "project": "p", "match": map[string]any{"cgroup": base + "/jobs"}})
	if r := a.launchIn(a.uid("cgroup"), in, nil, "--", "true"); r.code != 0 {
		t.Fatalf("below the prefix: %s", r)
	}
	if r := a.launchIn(a.uid("cgroup"), beside, nil, "--", "true"); r.code != 125 || !strings.Contains(r.stderr, "WORKLOAD_UNKNOWN") {
		t.Fatalf("a sibling whose name starts with the prefix: %s", r)
	}
}

// TestIdentityAmbiguous: a process that two registrations claim is refused,
// with both ids in the launcher's message and the audit log.
func TestIdentityAmbiguous(t *testing.T) {
	unit := "envlet-e2e-" + randHex(4) + ".service"
	dirs := makeCgroups(t, "/system.slice/"+unit)
	a := startAgent(t, "")
	a.cli("project", "create", "p")
	a.register(map[string]any{"id": "claim-a", "user": "u", "project": "p", "match": map[string]any{"systemd_unit": unit}})
	a.register(map[string]any{"id": "claim-b", "user": "u", "project": "p", "match": map[string]any{"uid": a.uid("claim")}})
	r := a.launchIn(a.uid("claim"), dirs, nil, "--", "true")
	if r.code != 125 || !strings.Contains(r.stderr, "WORKLOAD_AMBIGUOUS") || !strings.Contains(r.stderr, "claim-a, claim-b") {
		t.Fatalf("two claims: %s", r)
	}
	b, _ := os.ReadFile(a.audit)
	found := false
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, `"code":"WORKLOAD_AMBIGUOUS"`) && strings.Contains(l, "claim-a, claim-b") && strings.Contains(l, "unit "+unit) {
			found = true
		}
	}
	if !found {
		t.Fatalf("the audit log lacks the ambiguous refusal:\n%s", b)
	}
}

// TestTokens: "token": true issues a token in a 0400 file owned by the
// workload's uid; the launcher that sends it is served, one that sends
// none or another is refused; the token survives a restart (API and file
// registrations) and is revoked with the registration. It never shows in
// a log, the audit log or CLI output.
func TestTokens(t *testing.T) {
	a := startAgent(t, "")
	a.cli("project", "create", "p")
	reg := filepath.Join(a.dir, "tok.json")
	os.WriteFile(reg, []byte(`{"id":"tok","user":"u","project":"p","match":{"token":true,"uid":`+uidName(a.uid("tok"))+`},"runtime":{"WHO":"tok"}}`), 0o600)
	out := a.cli("workload", "register", reg)
	path := filepath.Join(a.dir, "tokens", "tok")
	if !strings.Contains(out, "token file: "+path) {
		t.Fatalf("register printed %q", out)
	}
	checkFile := func(path string, uid uint32) string {
		t.Helper()
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != 0o400 || fi.Sys().(*syscall.Stat_t).Uid != uid {
			t.Fatalf("token file %s: mode %v uid %d", path, fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid)
		}
		b, _ := os.ReadFile(path)
		return strings.TrimSpace(string(b))
	}
	token := checkFile(path, a.uid("tok"))
	if len(token) != 64 {
		t.Fatalf("token of %d characters", len(token))
	}
	var list []struct {
		ID        string `json:"id"`
		TokenFile string `json:"token_file"`
	}
	json.Unmarshal([]byte(a.cli("workload", "list", "--json")), &list)
	if len(list) != 1 || list[0].TokenFile != path {
		t.Fatalf("workload list: %+v", list)
	}

	// The workload reads its own token file, by flag or environment.
	if env, r := a.launchEnv(a.uid("tok"), a.uid("tok"), "ENVLET_TOKEN_FILE="+path); env["WHO"] != "tok" {
		t.Fatalf("with the token: %s", r)
	}
	if r := a.runAs(a.uid("tok"), a.uid("tok"), "", nil, bins.exec, "--token-file", path, "--", "true"); r.code != 0 {
		t.Fatalf("with --token-file: %s", r)
	}
	// Without it, with another, or as another uid: refused.
	wrong := filepath.Join(a.dir, "wrong")
	os.WriteFile(wrong, []byte(randHex(32)+"\n"), 0o644)
	for _, tt := range []struct {
		name string
		uid  uint32
		env  []string
	}{
		{"NoToken", a.uid("tok"), nil},
		{"WrongToken", a.uid("tok"), []string{"ENVLET_TOKEN_FILE=" + wrong}},
		{"OtherUID", a.uid("stranger"), []string{"ENVLET_TOKEN_FILE=" + wrong}},
	} {
		if r := a.runAs(tt.uid, tt.uid, "", tt.env, bins.exec, "--", "true"); r.code != 125 || !strings.Contains(r.stderr, "WORKLOAD_UNKNOWN") {
			t.Errorf("%s: %s", tt.name, r)
		}
	}
	// Another uid cannot read the file.
	if r := a.runAs(a.uid("stranger"), a.uid("stranger"), "", nil, "/bin/cat", path); r.code == 0 {
		t.Fatal("another uid read the token file")
	}

	// A file registration gets one too; both survive a kill -9 and restart.
	os.WriteFile(filepath.Join(a.workDir, "ftok.json"), []byte(`{"id":"ftok","user":"u","project":"p","match":{"token":true,"uid":`+uidName(a.uid("ftok"))+`}}`), 0o644)
	a.waitLog("workload registered: workload=ftok", 1)
	fpath := filepath.Join(a.dir, "tokens", "ftok")
	ftoken := checkFile(fpath, a.uid("ftok"))
	a.kill()
	a.start()
	if got := checkFile(path, a.uid("tok")); got != token {
		t.Fatal("the API registration's token changed across a restart")
	}
	if got := checkFile(fpath, a.uid("ftok")); got != ftoken {
		t.Fatal("the file registration's token changed across a restart")
	}
	if r := a.runAs(a.uid("tok"), a.uid("tok"), "", []string{"ENVLET_TOKEN_FILE=" + path}, bins.exec, "--", "true"); r.code != 0 {
		t.Fatalf("after a restart: %s", r)
	}
	if r := a.runAs(a.uid("ftok"), a.uid("ftok"), "", []string{"ENVLET_TOKEN_FILE=" + fpath}, bins.exec, "--", "true"); r.code != 0 {
		t.Fatalf("file registration after a restart: %s", r)
	}

	// Revoked with the registration.
	saved := filepath.Join(a.dir, "saved-token")
	os.WriteFile(saved, []byte(token+"\n"), 0o644)
	a.cli("workload", "delete", "tok")
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("token file kept after delete: %v", err)
	}
	a.cli("workload", "register", reg) // same id again: a new token
	if got := checkFile(path, a.uid("tok")); got == token {
		t.Fatal("a re-registration got the revoked token back")
	}
	if r := a.runAs(a.uid("tok"), a.uid("tok"), "", []string{"ENVLET_TOKEN_FILE=" + saved}, bins.exec, "--", "true"); r.code != 125 {
		t.Fatalf("the revoked token was accepted: %s", r)
	}
	os.Remove(filepath.Join(a.workDir, "ftok.json"))
	a.waitLog("workload removed: workload=ftok", 1)
	if _, err := os.Lstat(fpath); !os.IsNotExist(err) {
		t.Fatalf("file registration's token kept after the file went: %v", err)
	}
	a.stop()
	os.Remove(saved)
	os.Remove(wrong)
	a.noCanary(token, ftoken)
	for _, tk := range []string{token, ftoken} {
		if strings.Contains(a.log.String(), tk) {
			t.Error("a token is in the agent log")
		}
	}
}

// TestPidReuse: a process connects, hands its connection to another and
// exits; its pid is then given to a process of a registered unit (the
// kernel's ns_last_pid picks the next pid). The request sent on the
// connection must not be served as that unit: the agent checks, through
// the pidfd of the process that connected, that the pid it read
// /proc/PID/cgroup through is still that process.
func TestPidReuse(t *testing.T) {
	unit := "envlet-e2e-victim-" + randHex(4) + ".service"
	dirs := makeCgroups(t, "/system.slice/"+unit)
	a := startAgent(t, "")
	a.cli("project", "create", "p")
	const canary = "canary-victim-6c1f"
	a.register(map[string]any{"id": "victim", "user": "u", "project": "p", "match": map[string]any{"systemd_unit": unit},
		"runtime": map[string]string{"VICTIM_VALUE": canary}})
	// The registration is right: a real process of the unit is served.
	if r := a.launchIn(a.uid("exited"), dirs, nil, "--", "env"); !strings.Contains(r.stdout, canary) {
		t.Fatalf("the unit's own process: %s", r)
	}
	for try := 0; try < 30; try++ {
		conn, pid := connectAndExit(t, a.workSock, a.uid("exiting"))
		victim, ok := startWithPid(t, pid)
		if !ok {
			conn.Close()
			continue
		}
		for _, d := range dirs {
			if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
				t.Fatal(err)
			}
		}
		// What /proc says of that pid now is the victim's unit.
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if !strings.Contains(string(cg), unit) {
			t.Fatalf("the victim is not in %s: %s", unit, cg)
		}
		conn.Write(wire.AppendRequest(nil, wire.Request{Type: wire.TypeGetEnv}))
		typ, payload, err := wire.ReadFrame(conn, nil)
		conn.Close()
		victim.Process.Kill()
		victim.Wait()
		if err != nil {
			t.Fatal(err)
		}
		if typ != wire.TypeError {
			t.Fatalf("a recycled pid was served %s", typ)
		}
		code, msg, _ := wire.DecodeError(payload)
		if code != "WORKLOAD_UNKNOWN" || !strings.Contains(msg, "exited") || strings.Contains(msg, canary) {
			t.Fatalf("refusal %s: %s", code, msg)
		}
		return
	}
	t.Skip("the pid never came round to the victim (other processes kept taking it)")
}

// connectAndExit runs a helper as uid that connects to sock, passes the
// connection back over a socket pair and exits; it returns the connection
// and the pid of the (reaped) process that made it.
func connectAndExit(t *testing.T, sock string, uid uint32) (*net.UnixConn, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "mine"), os.NewFile(uintptr(fds[1]), "theirs")
	defer mine.Close()
	cmd := helperCmd(t, "connect-pass", sock)
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	out, err := cmd.CombinedOutput()
	theirs.Close()
	if err != nil {
		t.Fatalf("helper: %v %s", err, out)
	}
	pc, err := net.FileConn(mine)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := pc.(*net.UnixConn).ReadMsgUnix(make([]byte, 1), oob)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("no fd passed: %v", err)
	}
	got, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(got) != 1 {
		t.Fatalf("no fd passed: %v", err)
	}
	f := os.NewFile(uintptr(got[0]), "passed")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	return c.(*net.UnixConn), cmd.ProcessState.Pid()
}

// startWithPid starts a sleeping process with the given pid, by setting the
// kernel's last pid just below it; other processes may get there first.
func startWithPid(t *testing.T, pid int) (*exec.Cmd, bool) {
	t.Helper()
	if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0); err != nil {
		t.Skipf("cannot choose the next pid here (%v)", err)
	}
	cmd := exec.Command("/bin/sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if cmd.Process.Pid != pid {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, false
	}
	return cmd, true
}

// helperConnectPass is the child of connectAndExit: connect, pass the
// connection over fd 3, exit.
func helperConnectPass(sock string) int {
	c, err := net.Dial("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	f, err := c.(*net.UnixConn).File()
	if err != nil {
		return 1
	}
	pc, err := net.FileConn(os.NewFile(3, "pass"))
	if err != nil {
		return 1
	}
	if _, _, err := pc.(*net.UnixConn).WriteMsgUnix([]byte{0}, unix.UnixRights(int(f.Fd())), nil); err != nil {
		return 1
	}
	return 0
}
