package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

// File-mounted env (docs/design.md §6) against the real agent: the files appear,
// follow changes, belong to the workload's uid alone, and go away.

const (
	canaryMountVar    = "c4n4ry-m0unt-v4r"
	canaryMountSecret = "c4n4ry-m0unt-s3cr3t"
)

func TestMount(t *testing.T) {
	a := startAgent(t, "PATH = /usr/bin:/bin\nGREETING = \"hello world\"")
	u := freeUIDs(t, 2)
	uid, other := u[0], u[1] // no passwd entries: the agent names them by their numbers
	a.cli("project", "create", "p")
	a.cli("project", "add-member", "p", uidName(uid))
	tricky := `a "b" 'c' $d ${e} \f ` + "`g` # h = i\nsecond line ünï " + canaryMountVar
	a.cli("env", "set", "--user", uidName(uid), "TRICKY", tricky)
	a.cli("env", "set", "--user", uidName(uid), "V", "one")
	bin := filepath.Join(a.dir, "bytes")
	os.WriteFile(bin, []byte("\x00\x01\xff binary\n"), 0o644)
	for _, args := range [][]string{
		{"secret", "create", "TOKEN", canaryMountSecret},
		{"secret", "create", "BLOB", "--file", bin},
		{"secret", "create", "--project", "p", "SHARED", "shared-1"},
		{"secret", "create", "--project", "p", "TOKEN", "the project's, hidden by the user's"},
	} {
		if r := a.runAs(uid, uid, "", nil, bins.envlet, args...); r.code != 0 {
			t.Fatalf("envlet %v: %s", args, r)
		}
	}
	a.register(map[string]any{"id": "m", "user": uidName(uid), "project": "p", "match": map[string]any{"uid": uid}, "mount": true,
		"runtime": map[string]string{"GREETING": ""}})
	a.waitLog("mount written: workload=m ", 1)
	dir := filepath.Join(a.dir, "mounts", "m")

	read := func(name string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	// The env file, read by a shell as the workload's own user.
	os.WriteFile(filepath.Join(a.dir, "tricky"), []byte(tricky), 0o644)
	r := a.runAs(uid, uid, "", nil, "/bin/bash", "-c", `set -a; . "$1"; printf '%s|%s|%s' "$V" "${GREETING-unset}" "$PATH"; [ "$TRICKY" = "$(cat "$2")" ]`,
		"sh", filepath.Join(dir, "env"), filepath.Join(a.dir, "tricky"))
	if r.code != 0 || r.stdout != "one|unset|/usr/bin:/bin" {
		t.Fatalf("sourcing env as uid %d: %s\nenv file:\n%s", uid, r, read("env"))
	}
	var js map[string]string
	if err := json.Unmarshal([]byte(read("env.json")), &js); err != nil {
		t.Fatal(err)
	}
	if js["TRICKY"] != tricky || js["V"] != "one" || js["PATH"] != "/usr/bin:/bin" || len(js) != 3 {
		t.Errorf("env.json: %v", js)
	}
	if got := read("docker.env"); !strings.Contains(got, "\nV=one\n") || strings.Contains(got, "TRICKY") {
		t.Errorf("docker.env:\n%s", got)
	}
	if got := read("docker.env.skipped"); got != "TRICKY\n" {
		t.Errorf("docker.env.skipped: %q", got)
	}
	for name, want := range map[string]string{"secrets/TOKEN": canaryMountSecret, "secrets/BLOB": "\x00\x01\xff binary\n", "secrets/SHARED": "shared-1"} {
		if got := read(name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	// Only the workload's uid may read it.
	if r := a.runAs(uid, uid, "", nil, "/bin/cat", filepath.Join(dir, "secrets", "SHARED")); r.code != 0 {
		t.Errorf("uid %d reading its secret: %s", uid, r)
	}
	if r := a.runAs(other, other, "", nil, "/bin/cat", filepath.Join(dir, "env")); r.code == 0 || !strings.Contains(r.stderr, "Permission denied") {
		t.Errorf("another uid read the mount: %s", r)
	}
	for _, p := range []string{"", "env", "secrets", "secrets/TOKEN"} {
		fi, err := os.Stat(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		want := os.FileMode(0o400)
		if fi.IsDir() {
			want = 0o500 | os.ModeDir
		}
		if st := fi.Sys().(*syscall.Stat_t); fi.Mode() != want || st.Uid != uid {
			t.Errorf("%q: %v uid %d, want %v uid %d", p, fi.Mode(), st.Uid, want, uid)
		}
	}

	// A change to the workload's user rewrites it; one to someone else does
	// not (the writer works in order, so a write for it would come first).
	first, _ := os.Readlink(dir)
	a.cli("env", "set", "--user", "someone-else", "V", "x")
	a.cli("env", "set", "--user", uidName(uid), "V", "two")
	a.waitLog("mount written: workload=m ", 2)
	if !strings.Contains(read("env"), "\nV=\"two\"\n") {
		t.Errorf("env after the change:\n%s", read("env"))
	}
	if _, err := os.Lstat(filepath.Join(a.dir, "mounts", first)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the old version %s is still there: %v", first, err)
	}
	// A secret the workload may read changes its mount, though not its env.
	a.cli("secret", "create", "--project", "p", "NEW", "new-1")
	a.waitLog("mount written: workload=m ", 3)
	if got := read("secrets/NEW"); got != "new-1" {
		t.Errorf("secrets/NEW: %q", got)
	}
	if n := strings.Count(a.log.String(), "mount written: workload=m "); n != 3 {
		t.Errorf("%d mount writes, want 3 (one per change of this workload)", n)
	}

	a.cli("workload", "delete", "m")
	a.waitLog("mount removed: workload=m", 1)
	for _, p := range []string{"m", ".m"} {
		if _, err := os.Lstat(filepath.Join(a.dir, "mounts", p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after deregistration: %v", p, err)
		}
	}
	a.noCanary(canaryMountVar, canaryMountSecret)
}

// TestMountLifecycle: a mount survives an agent restart, one whose
// registration went away while the agent was down is swept, and turning
// "mount" off removes it.
func TestMountLifecycle(t *testing.T) {
	a := startAgent(t, "")
	a.cli("project", "create", "p")
	writeReg := func(name string, reg map[string]any) {
		t.Helper()
		b, _ := json.Marshal(reg)
		tmp := filepath.Join(a.workDir, "."+name+".tmp")
		os.WriteFile(tmp, b, 0o644)
		if err := os.Rename(tmp, filepath.Join(a.workDir, name)); err != nil {
			t.Fatal(err)
		}
	}
	reg := func(id string, uid uint32, mount bool) map[string]any {
		return map[string]any{"id": id, "user": "u", "project": "p", "match": map[string]any{"uid": uid}, "mount": mount,
			"runtime": map[string]string{"ID": id}}
	}
	writeReg("file.json", reg("file", a.uid("file"), true))
	a.register(reg("api", a.uid("api"), true))
	writeReg("off.json", reg("off", a.uid("off"), true))
	for _, id := range []string{"file", "api", "off"} {
		a.waitLog("mount written: workload="+id+" ", 1)
	}
	mounts := filepath.Join(a.dir, "mounts")

	writeReg("off.json", reg("off", a.uid("off"), false))
	a.waitLog("mount removed: workload=off", 1)

	a.stop()
	os.Remove(filepath.Join(a.workDir, "file.json"))
	a.start()
	a.waitLog("removed a stale mount", 2) // the link and the versions of "file"
	a.waitLog("mount written: workload=api ", 1)
	entries, _ := os.ReadDir(mounts)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{".api", "api"}) {
		t.Errorf("mount dir after the restart: %v, want only api's", names)
	}
	b, err := os.ReadFile(filepath.Join(mounts, "api", "env"))
	if err != nil || !strings.Contains(string(b), "\nID=\"api\"\n") {
		t.Errorf("api's env after the restart: %q %v", b, err)
	}
}

// BenchmarkMountUpdate: the time from a change through the admin API (PUT
// of an account variable; it returns once the agent has applied it) to the
// workload's mount holding the new value, as a reader watching the mount
// directory with inotify sees it. The mount directory is on a tmpfs
// (/dev/shm) when there is one, as /run/envlet/mounts is on a node; the
// store stays in the temporary directory.
//
//	go test -run '^$' -bench MountUpdate -benchtime 1000x ./e2e/
func BenchmarkMountUpdate(b *testing.B) {
	dir, err := os.MkdirTemp("", "elb")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if shm, err := os.MkdirTemp("/dev/shm", "elbm"); err == nil {
		defer os.RemoveAll(shm)
		if err := os.Symlink(shm, filepath.Join(dir, "mounts")); err != nil {
			b.Fatal(err)
		}
		os.Chmod(shm, 0o755)
	}
	agent := exec.Command(bins.envletd, "-dev", "-dir", dir)
	agent.Stderr = newLogBuf()
	out, _ := agent.StdoutPipe()
	if err := agent.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { agent.Process.Signal(syscall.SIGTERM); agent.Wait() }()
	sc := bufio.NewScanner(out)
	var env []string
	for len(env) < 2 && sc.Scan() {
		env = append(env, strings.TrimPrefix(sc.Text(), "export "))
	}
	run := func(stdin string, args ...string) {
		cmd := exec.Command(bins.envlet, args...)
		cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, env...)
		cmd.Stdin = strings.NewReader(stdin)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("envlet %s: %v\n%s", args, err, out)
		}
	}
	run("", "project", "create", "bench")
	run("", "project", "add-member", "bench", "benchuser")
	run("", "env", "set", "--user", "benchuser", "V", "0")
	// 20 other variables, so a version is a realistic size.
	vars := map[string]string{}
	for i := range 20 {
		vars[fmt.Sprintf("VAR_%d", i)] = strings.Repeat("v", 40)
	}
	regJSON, _ := json.Marshal(map[string]any{"id": "bench", "user": "benchuser", "project": "bench", "match": map[string]any{"uid": 0}, "mount": true, "runtime": vars})
	run(string(regJSON), "workload", "register", "-")

	mounts := filepath.Join(dir, "mounts")
	envFile := filepath.Join(mounts, "bench", "env")
	w, err := fsnotify.NewWatcher()
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	os.MkdirAll(mounts, 0o755)
	if fi, err := os.Stat(mounts); err == nil && fi.IsDir() {
		mounts, _ = filepath.EvalSymlinks(mounts) // inotify watches the directory itself
	}
	if err := w.Add(mounts); err != nil {
		b.Fatal(err)
	}
	// await waits until the mount's env holds V=v: the link is swapped
	// with a rename into the mount directory, which inotify reports.
	await := func(v string) {
		want := "\nV=\"" + v + "\"\n"
		for {
			if b, err := os.ReadFile(envFile); err == nil && strings.Contains(string(b), want) {
				return
			}
			select {
			case <-w.Events:
			case err := <-w.Errors:
				b.Fatal(err)
			case <-time.After(10 * time.Second):
				b.Fatalf("the mount never held V=%s", v)
			}
		}
	}
	await("0")

	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(dir, "admin.sock"))
	}}}
	put := func(v string) time.Duration {
		t0 := time.Now()
		req, _ := http.NewRequest("PUT", "http://envlet/v1/users/benchuser/env/V", strings.NewReader(`{"value":"`+v+`"}`))
		resp, err := client.Do(req)
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("PUT V: %v %v", err, resp)
		}
		resp.Body.Close()
		return time.Since(t0)
	}

	b.ResetTimer()
	toMount := make([]time.Duration, 0, b.N)
	toReturn := make([]time.Duration, 0, b.N)
	for i := 1; i <= b.N; i++ {
		v := strconv.Itoa(i)
		t0 := time.Now()
		toReturn = append(toReturn, put(v))
		await(v)
		toMount = append(toMount, time.Since(t0))
	}
	b.StopTimer()
	lag := make([]time.Duration, len(toMount))
	for i := range toMount {
		lag[i] = toMount[i] - toReturn[i]
	}
	b.ReportMetric(float64(pct(toMount, 50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(toMount, 99).Microseconds())/1000, "p99-ms")
	row := func(what string, d []time.Duration) string {
		return fmt.Sprintf("%-60s %9s %9s\n", what, pct(d, 50).Round(time.Microsecond), pct(d, 99).Round(time.Microsecond))
	}
	b.Logf("\n%-60s %9s %9s\n%s%s%sratio p50 (PUT -> mount) / (PUT alone): %.2f×",
		fmt.Sprintf("over %d changes (a mount of 22 variables)", len(toMount)), "p50", "p99",
		row("admin PUT -> mount holds the new value", toMount),
		row("admin PUT alone (returns once the agent applied it)", toReturn),
		row("PUT returned -> mount holds the new value (the lag)", lag),
		float64(pct(toMount, 50))/float64(pct(toReturn, 50)))
}

// pct is the p-th percentile of d.
func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

// TestMountCountsAsServed: a workload that only reads its mount (it never
// asks the socket) shows the revision its mount holds in `workload list`,
// and is not stale once a change has reached the mount.
func TestMountCountsAsServed(t *testing.T) {
	a := startAgent(t, "")
	a.cli("project", "create", "p")
	a.register(map[string]any{"id": "mo", "user": "u", "project": "p", "match": map[string]any{"uid": a.uid("mo")}, "mount": true})
	a.waitLog("mount written: workload=mo ", 1)
	row := func() map[string]any {
		t.Helper()
		var list []map[string]any
		if err := json.Unmarshal([]byte(a.cli("workload", "list", "--json")), &list); err != nil || len(list) != 1 {
			t.Fatalf("workload list: %v %v", list, err)
		}
		return list[0]
	}
	r := row()
	if r["revision"].(float64) == 0 || r["revision"] != r["env_revision"] || r["stale"] != false {
		t.Fatalf("after the first mount: %v; want revision = env_revision, not stale", r)
	}
	a.cli("project", "env", "set", "p", "MODE", "two")
	a.waitLog("mount written: workload=mo ", 2)
	r = row()
	if r["revision"] != r["env_revision"] || r["stale"] != false {
		t.Fatalf("after the change reached the mount: %v; want revision = env_revision, not stale", r)
	}
	b, err := os.ReadFile(filepath.Join(a.dir, "mounts", "mo", "env"))
	if err != nil || !strings.Contains(string(b), "MODE=\"two\"") {
		t.Fatalf("mount env: %q %v", b, err)
	}
}
