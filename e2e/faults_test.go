package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Faults: the state directory and, separately, the audit log on a small
// tmpfs filled to the brim, and on a file system the kernel turned
// read-only. A write fails with its code and a message that says what to
// do; no acknowledged write is lost; workloads are still served; once
// there is room again writes work without a restart.

// mountTmpfs mounts a tmpfs of size bytes at dir (made if missing) and
// unmounts it at the end of the test, after the agent has stopped.
func mountTmpfs(t *testing.T, dir string, size int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size="+strconv.Itoa(size)+",mode=0700"); err != nil {
		t.Skipf("cannot mount a tmpfs (%v): needs root with CAP_SYS_ADMIN", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
}

// moveOnto moves what dir holds onto a new file system mounted at dir by
// mount (the agent stopped meanwhile).
func moveOnto(t *testing.T, dir string, mount func(dir string)) {
	t.Helper()
	old := dir + ".old"
	if err := os.Rename(dir, old); err != nil {
		t.Fatal(err)
	}
	mount(dir)
	entries, err := os.ReadDir(old)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(old, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	os.RemoveAll(old)
	syscall.Sync() // the copies are on the disk, as the agent's own writes are
}

// fillUp writes a file in dir until the file system is full and returns
// its path; removing it gives the room back.
func fillUp(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte("f"), 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	for { // and the last bytes of the last page
		if _, err := f.Write(chunk[:1]); err != nil {
			break
		}
	}
	return path
}

// apiErr is an admin API reply: its status and, for an error, its code
// and message.
type apiErr struct {
	status        int
	code, message string
}

func adminDo(t *testing.T, hc *http.Client, method, path string, body any) apiErr {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://envlet"+path, rd)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var e struct {
		Error struct{ Code, Message string }
	}
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &e)
	return apiErr{resp.StatusCode, e.Error.Code, e.Error.Message}
}

// putVar sets project p's variable name.
func putVar(t *testing.T, hc *http.Client, name, value string) apiErr {
	t.Helper()
	return adminDo(t, hc, http.MethodPut, "/v1/projects/p/env/"+name, map[string]string{"value": value})
}

// faultAgent is an agent with project p, member alice, and a workload of
// hers run as a uid of its own.
func faultAgent(t *testing.T) (*agentProc, uint32) {
	t.Helper()
	a := startAgentConf(t, "", "")
	uid := freeUID(t)
	a.cli("project", "create", "p")
	a.cli("project", "add-member", "p", "alice")
	a.register(map[string]any{"id": "w", "user": "alice", "project": "p", "match": map[string]any{"uid": uid}})
	return a, uid
}

// served checks that the workload is served what want holds.
func served(t *testing.T, a *agentProc, uid uint32, want map[string]string) {
	t.Helper()
	env, r := a.launchEnv(uid, uid)
	if r.code != 0 {
		t.Fatalf("launch while the disk is in fault: %s", r)
	}
	for k, v := range want {
		if env[k] != v {
			t.Fatalf("served %s=%q, want %q", k, env[k], v)
		}
	}
}

// auditLines reads the audit log files and fails on any line that is not
// one whole JSON object.
func auditLines(t *testing.T, paths ...string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > 0 && b[len(b)-1] != '\n' {
			t.Fatalf("%s ends inside a line: %q", p, b[max(0, len(b)-80):])
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, 1<<20)
		for n := 1; sc.Scan(); n++ {
			var rec map[string]any
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
				t.Fatalf("%s line %d is not JSON (%v): %q", p, n, err, sc.Text())
			}
			out = append(out, rec)
		}
	}
	return out
}

// TestFaultStateDirFull: the store's file system fills up. Writes are
// refused with STORAGE_FULL, saying what to do, while the workload is
// served; freeing space makes writes work again in the same agent; after
// kill -9 every acknowledged write is there and no refused one.
func TestFaultStateDirFull(t *testing.T) {
	if e2eBackend == "etcd" {
		t.Skip("the store is etcd: no state directory to fill")
	}
	a, uid := faultAgent(t)
	hc := adminHTTP(a.adminSock)
	acked := map[string]string{}
	for i := range 5 {
		name, value := fmt.Sprintf("BEFORE_%d", i), fmt.Sprintf("before-%d", i)
		if r := putVar(t, hc, name, value); r.status != 200 {
			t.Fatalf("put %s: %+v", name, r)
		}
		acked[name] = value
	}
	a.stop()
	moveOnto(t, a.stateDir, func(dir string) { mountTmpfs(t, dir, 256<<10) })
	a.start()
	pid := a.cmd.Process.Pid
	filler := fillUp(t, a.stateDir)

	// Writes go on until the log's last page is full, then are refused.
	var refused []string
	for i := 0; i < 400 && len(refused) < 3; i++ {
		name, value := fmt.Sprintf("FULL_%d", i), strings.Repeat(strconv.Itoa(i%10), 1000)
		switch r := putVar(t, hc, name, value); {
		case r.status == 200 && len(refused) == 0:
			acked[name] = value
		case r.status == http.StatusInsufficientStorage && r.code == "STORAGE_FULL":
			if !strings.Contains(r.message, a.stateDir) || !strings.Contains(r.message, "Free space") || !strings.Contains(r.message, "nothing was changed") {
				t.Fatalf("message does not say what happened and what to do: %q", r.message)
			}
			refused = append(refused, name)
		default:
			t.Fatalf("put %s on a full disk: %+v, want 507 STORAGE_FULL (refused so far: %v)", name, r, refused)
		}
	}
	if len(refused) == 0 {
		t.Fatal("no write was refused on a full state dir")
	}
	r := a.cliAs(0, "project", "env", "set", "p", "CLI_FULL", strings.Repeat("c", 1000))
	if r.code == 0 || !strings.Contains(r.stderr, "STORAGE_FULL") {
		t.Fatalf("envlet on a full disk: %s", r)
	}
	refused = append(refused, "CLI_FULL")
	served(t, a, uid, acked)

	// Room again: the same agent takes writes.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if r := putVar(t, hc, "AFTER", "after"); r.status != 200 {
		t.Fatalf("put after space came back: %+v", r)
	}
	acked["AFTER"] = "after"
	if a.cmd.Process.Pid != pid {
		t.Fatal("the agent restarted")
	}
	served(t, a, uid, acked)

	// The refusals are in the audit log with their code.
	n := 0
	for _, rec := range auditLines(t, a.audit) {
		if rec["action"] == "refuse" && rec["code"] == "STORAGE_FULL" {
			n++
		}
	}
	if n != len(refused) {
		t.Errorf("%d STORAGE_FULL refusals in the audit log, want %d", n, len(refused))
	}

	a.kill()
	a.start()
	got := projectEnvOf(t, a, "p")
	for k, v := range acked {
		if got[k] != v {
			t.Fatalf("after kill -9: %s=%q, acknowledged %q", k, got[k], v)
		}
	}
	for _, k := range refused {
		if _, ok := got[k]; ok {
			t.Fatalf("refused write %s is in the store", k)
		}
	}
	t.Logf("%d writes acknowledged, %d refused with STORAGE_FULL, all acknowledged present after kill -9", len(acked), len(refused))
}

// TestFaultAuditLogFull: the audit log's file system fills up. An admin
// change fails closed (STORAGE_FULL naming the audit log; the change is
// not made), workloads are still served (their serve records are lost,
// counted, and said in an audit-lost record once there is room); freeing
// space makes changes work again in the same agent.
func TestFaultAuditLogFull(t *testing.T) {
	a, uid := faultAgent(t)
	a.stop()
	logDir := filepath.Join(a.dir, "auditfs")
	mountTmpfs(t, logDir, 128<<10)
	conf, err := os.ReadFile(a.config)
	if err != nil {
		t.Fatal(err)
	}
	newLog := filepath.Join(logDir, "audit.log")
	conf = bytes.Replace(conf, []byte("audit_log = "+a.audit+"\n"), []byte("audit_log = "+newLog+"\n"), 1)
	if err := os.WriteFile(a.config, conf, 0o644); err != nil {
		t.Fatal(err)
	}
	a.audit = newLog
	a.start()
	pid := a.cmd.Process.Pid
	hc := adminHTTP(a.adminSock)
	if r := putVar(t, hc, "K", "v0"); r.status != 200 {
		t.Fatalf("put: %+v", r)
	}
	filler := fillUp(t, logDir)

	// Changes go on while the log's last page has room, then fail closed.
	last, refusedValue := "v0", ""
	for i := 1; i < 400 && refusedValue == ""; i++ {
		value := fmt.Sprintf("v%d", i)
		switch r := putVar(t, hc, "K", value); {
		case r.status == 200:
			last = value
		case r.status == http.StatusInsufficientStorage && r.code == "STORAGE_FULL":
			if !strings.Contains(r.message, "audit log") || !strings.Contains(r.message, "nothing was changed") || !strings.Contains(r.message, "Free space") {
				t.Fatalf("message does not say what happened and what to do: %q", r.message)
			}
			refusedValue = value
		default:
			t.Fatalf("put on a full audit disk: %+v, want 507 STORAGE_FULL", r)
		}
		served(t, a, uid, map[string]string{"K": last}) // serve records fill the page too
	}
	if refusedValue == "" {
		t.Fatal("no admin change was refused while the audit log could not be written")
	}
	for _, args := range [][]string{{"project", "env", "set", "p", "K", "cli"}, {"project", "create", "q"}, {"env", "set", "--user", "alice", "A", "1"}} {
		if r := a.cliAs(0, args...); r.code == 0 || !strings.Contains(r.stderr, "STORAGE_FULL") {
			t.Fatalf("envlet %v with the audit log full: %s", args, r)
		}
	}
	if got := projectEnvOf(t, a, "p")["K"]; got != last {
		t.Fatalf("K = %q after refused changes, want %q", got, last)
	}
	// A reveal is refused too: no value is shown to a person unrecorded.
	if r := adminDo(t, hc, http.MethodGet, "/v1/projects/p/env?reveal=1", nil); r.code != "STORAGE_FULL" || !strings.Contains(r.message, "nothing was shown") {
		t.Fatalf("reveal with the audit log full: %+v", r)
	}
	for range 3 {
		served(t, a, uid, map[string]string{"K": last})
	}
	st := a.statusMap()
	if lost, _ := st["audit_lost_records"].(float64); lost < 3 || st["audit_error"] == nil {
		t.Fatalf("status does not show the failing audit log: %v", st)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if r := putVar(t, hc, "K", "final"); r.status != 200 {
		t.Fatalf("put after space came back: %+v", r)
	}
	if a.cmd.Process.Pid != pid {
		t.Fatal("the agent restarted")
	}
	served(t, a, uid, map[string]string{"K": "final"})
	a.stop() // flushes the serve records

	hmacOf := func(v string) string {
		out := a.runAs(0, 0, v, nil, bins.envlet, "audit", "hmac", "--value-stdin")
		return strings.TrimSpace(out.stdout)
	}
	a.start()
	finalSum, refusedSum := hmacOf("final"), hmacOf(refusedValue)
	a.stop()
	var lostRecs, finalSets, refusedSets int
	for _, rec := range auditLines(t, newLog) {
		switch {
		case rec["action"] == "audit-lost":
			lostRecs++
		case rec["action"] == "set" && rec["hmac"] == finalSum:
			finalSets++
		case rec["action"] == "set" && rec["hmac"] == refusedSum:
			refusedSets++
		}
	}
	if lostRecs == 0 || finalSets != 1 || refusedSets != 0 {
		t.Fatalf("audit log: %d audit-lost records, %d records of the change made after, %d of the refused one; want >0, 1, 0", lostRecs, finalSets, refusedSets)
	}
	a.start()
	if got := projectEnvOf(t, a, "p")["K"]; got != "final" {
		t.Fatalf("after restart K = %q", got)
	}
}

// projectEnvOf reads project p's variables over the admin socket.
func projectEnvOf(t *testing.T, a *agentProc, p string) map[string]string {
	t.Helper()
	resp, err := adminHTTP(a.adminSock).Get("http://envlet/v1/projects/" + p + "/env")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var vars []struct{ Name, Value string }
	if err := json.NewDecoder(resp.Body).Decode(&vars); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, v := range vars {
		out[v.Name] = v.Value
	}
	return out
}

// ext4ReadOnly mounts a small ext4 image (loop device, errors=remount-ro)
// at dir and returns a function that makes the kernel turn it read-only
// the way it does after an I/O error (/sys/fs/ext4/DEV/trigger_fs_error):
// open files stay open and every write fails with EROFS. A plain
// `mount -o remount,ro` is refused (EBUSY) while the agent holds a file
// open for writing, so this is how a disk goes read-only under a running
// agent. remount mounts the image again, writable (the agent stopped).
func ext4ReadOnly(t *testing.T, dir string) (toReadOnly, remount func()) {
	t.Helper()
	for _, tool := range []string{"mkfs.ext4", "mount", "umount", "findmnt"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing (e2fsprogs, mount)", tool)
			}
			t.Skipf("%s is missing", tool)
		}
	}
	img := filepath.Join(t.TempDir(), "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 16<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	mount := func() {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("mount", "-o", "loop,errors=remount-ro", img, dir).CombinedOutput(); err != nil {
			// A machine without loop devices (a container): not a tool
			// CI could install.
			t.Skipf("cannot mount an ext4 image on a loop device here: %v %s", err, out)
		}
	}
	mount()
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	toReadOnly = func() {
		dev, err := exec.Command("findmnt", "-n", "-o", "SOURCE", dir).Output()
		if err != nil {
			t.Fatal(err)
		}
		trigger := "/sys/fs/ext4/" + filepath.Base(strings.TrimSpace(string(dev))) + "/trigger_fs_error"
		if err := os.WriteFile(trigger, []byte("1"), 0); err != nil {
			t.Skipf("cannot make the kernel remount read-only (%s): %v", trigger, err)
		}
		if err := os.WriteFile(filepath.Join(dir, "probe"), nil, 0o600); !errors.Is(err, syscall.EROFS) {
			t.Fatalf("the file system is not read-only after the error: %v", err)
		}
	}
	remount = func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Fatalf("umount: %v %s", err, out)
		}
		mount()
	}
	return toReadOnly, remount
}

// TestFaultReadOnly: the kernel turns the store's file system, and
// separately the audit log's, read-only under the running agent. Writes
// are refused with STORAGE_READ_ONLY, workloads are served, and every
// acknowledged write is there once the file system is back and the agent
// restarted.
func TestFaultReadOnly(t *testing.T) {
	t.Run("StateDir", func(t *testing.T) {
		if e2eBackend == "etcd" {
			t.Skip("the store is etcd: no state directory")
		}
		a, uid := faultAgent(t)
		hc := adminHTTP(a.adminSock)
		if r := putVar(t, hc, "K", "kept"); r.status != 200 {
			t.Fatalf("put: %+v", r)
		}
		a.stop()
		var toRO, remount func()
		moveOnto(t, a.stateDir, func(dir string) { toRO, remount = ext4ReadOnly(t, dir) })
		a.start()
		if r := putVar(t, hc, "K2", "before"); r.status != 200 {
			t.Fatalf("put: %+v", r)
		}
		toRO()
		for range 2 {
			r := putVar(t, hc, "K", "lost")
			if r.status != http.StatusServiceUnavailable || r.code != "STORAGE_READ_ONLY" || !strings.Contains(r.message, "read-only") || !strings.Contains(r.message, "nothing was changed") {
				t.Fatalf("put on a read-only state dir: %+v, want 503 STORAGE_READ_ONLY", r)
			}
		}
		served(t, a, uid, map[string]string{"K": "kept", "K2": "before"})
		a.stop()
		remount()
		a.start()
		if got := projectEnvOf(t, a, "p"); got["K"] != "kept" || got["K2"] != "before" {
			t.Fatalf("after the file system came back: %v", got)
		}
		if r := putVar(t, hc, "K", "again"); r.status != 200 {
			t.Fatalf("put once writable: %+v", r)
		}
	})
	t.Run("AuditLog", func(t *testing.T) {
		a, uid := faultAgent(t)
		a.stop()
		logDir := filepath.Join(a.dir, "auditfs")
		toRO, _ := ext4ReadOnly(t, logDir)
		conf, _ := os.ReadFile(a.config)
		newLog := filepath.Join(logDir, "audit.log")
		conf = bytes.Replace(conf, []byte("audit_log = "+a.audit+"\n"), []byte("audit_log = "+newLog+"\n"), 1)
		os.WriteFile(a.config, conf, 0o644)
		a.audit = newLog
		a.start()
		hc := adminHTTP(a.adminSock)
		if r := putVar(t, hc, "K", "kept"); r.status != 200 {
			t.Fatalf("put: %+v", r)
		}
		toRO()
		r := putVar(t, hc, "K", "refused")
		if r.status != http.StatusServiceUnavailable || r.code != "STORAGE_READ_ONLY" || !strings.Contains(r.message, "audit log") {
			t.Fatalf("put with a read-only audit log: %+v, want 503 STORAGE_READ_ONLY", r)
		}
		served(t, a, uid, map[string]string{"K": "kept"})
		if got := projectEnvOf(t, a, "p")["K"]; got != "kept" {
			t.Fatalf("K = %q after a refused change", got)
		}
	})
}

// TestFaultStateDirFullEtcd: on etcd the state dir holds only the
// snapshot the agent serves from while etcd is away. Filled up, writes go
// on (etcd takes them), workloads are served, and `envlet status` says
// the snapshot cannot be written until there is room again.
func TestFaultStateDirFullEtcd(t *testing.T) {
	if e2eBackend != "etcd" {
		t.Skip("the etcd backend's state dir (make test-etcd runs this)")
	}
	a, uid := faultAgent(t)
	a.stop()
	moveOnto(t, a.stateDir, func(dir string) { mountTmpfs(t, dir, 256<<10) })
	a.start()
	filler := fillUp(t, a.stateDir)
	hc := adminHTTP(a.adminSock)
	snapshotError := func(want bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			st := a.statusMap()
			if _, has := st["snapshot_error"]; has == want {
				return
			}
		}
		t.Fatalf("status never showed snapshot_error present=%v", want)
	}
	for i := range 3 {
		if r := putVar(t, hc, "K", strconv.Itoa(i)); r.status != 200 {
			t.Fatalf("put on etcd with a full state dir: %+v", r)
		}
	}
	snapshotError(true)
	served(t, a, uid, map[string]string{"K": "2"})
	os.Remove(filler)
	snapshotError(false)
}
