package e2e

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Self-service runs (envlet run), workload update and audit list, over the
// real admin socket, as uids with no passwd entry (freeUIDs): the agent
// names each by its number. Every refusal is tested for every role that
// must be refused; canaries planted in every layer are searched for in
// everything printed, logged, audited and stored.

const (
	canaryRunAcct  = "c4n4ry-run-acct-71"
	canaryRunProj  = "c4n4ry-run-proj-72"
	canaryRunGroup = "c4n4ry-run-grp-73"
	canaryRunExec  = "c4n4ry-run-exec-74"
	canaryRunOther = "c4n4ry-run-other-75"
	canaryRunML    = "c4n4ry-run-ml-76"
	canaryUpd      = "c4n4ry-upd-77"
)

// selfUIDs: an owner and a member of fraud, a member of fraud only (for
// the limit), another user in no project.
type selfUIDs struct{ owner, member, member2, other uint32 }

// selfFixture: project fraud (owner, member, member2) with a project
// variable and group base; project ml without the member; account
// variables of the member and of the other user.
func selfFixture(t *testing.T, extraConfig string) (*agentProc, selfUIDs) {
	u := freeUIDs(t, 4)
	ids := selfUIDs{owner: u[0], member: u[1], member2: u[2], other: u[3]}
	a := startAgentConf(t, extraConfig, "PATH = /usr/bin:/bin")
	a.cli("project", "create", "fraud")
	a.cli("project", "add-member", "--owner", "fraud", uidName(ids.owner))
	a.cli("project", "add-member", "fraud", uidName(ids.member))
	a.cli("project", "add-member", "fraud", uidName(ids.member2))
	a.cli("project", "env", "set", "fraud", "DB_PASSWORD", canaryRunProj)
	a.cli("project", "env", "set", "fraud", "CLEARED", "x")
	a.cli("group", "create", "base")
	a.cli("group", "set", "base", "G_TOKEN", canaryRunGroup)
	a.cli("group", "assign", "base", "fraud")
	a.cli("project", "create", "ml")
	a.cli("project", "env", "set", "ml", "ML_KEY", canaryRunML)
	a.cli("env", "set", "--user", uidName(ids.member), "MY_TOKEN", canaryRunAcct)
	a.cli("env", "set", "--user", uidName(ids.other), "OTHER_SECRET", canaryRunOther)
	return a, ids
}

// runCLI runs envlet as uid; for `envlet run` the program's stdout holds
// values by design, and runAs keeps only stderr for the canary search.
func (a *agentProc) runCLI(uid uint32, args ...string) result {
	a.t.Helper()
	return a.runAs(uid, uid, "", nil, bins.envlet, args...)
}

type listedWorkload struct {
	ID        string   `json:"id"`
	User      string   `json:"user"`
	Project   string   `json:"project"`
	Source    string   `json:"source"`
	TokenFile string   `json:"token_file"`
	Runtime   []string `json:"runtime"`
	Revision  int64    `json:"revision"`
	Stale     bool     `json:"stale"`
}

func (a *agentProc) workloadsAs(uid uint32) []listedWorkload {
	a.t.Helper()
	r := a.cliAs(uid, "workload", "list", "--json")
	if r.code != 0 {
		a.t.Fatalf("workload list as %d: %s", uid, r)
	}
	var out []listedWorkload
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		a.t.Fatal(err)
	}
	return out
}

func (a *agentProc) tokenFiles() []string {
	ents, _ := os.ReadDir(filepath.Join(a.dir, "tokens"))
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// noRunsLeft: nothing of a run in workload list, the token directory, or
// (after a restart, which reloads the store) the store.
func (a *agentProc) noRunsLeft(when string) {
	a.t.Helper()
	if ws := a.workloadsAs(0); len(ws) != 0 {
		a.t.Fatalf("%s: workload list still holds %+v", when, ws)
	}
	if f := a.tokenFiles(); len(f) != 0 {
		a.t.Fatalf("%s: token files left: %v", when, f)
	}
}

func wantCode(t *testing.T, what string, r result, exit int, code string) {
	t.Helper()
	if r.code != exit || !strings.Contains(r.stderr, code) {
		t.Fatalf("%s: want exit %d and %s, got %s", what, exit, code, r)
	}
}

func TestRunEnvironment(t *testing.T) {
	a, u := selfFixture(t, "")
	r := a.runCLI(u.member, "run", "--project", "fraud", "-e", "EXTRA="+canaryRunExec, "-e", "CLEARED=", "--", "env")
	if r.code != 0 {
		t.Fatalf("envlet run: %s", r)
	}
	env := envOf(r.stdout)
	for k, v := range map[string]string{"MY_TOKEN": canaryRunAcct, "DB_PASSWORD": canaryRunProj, "G_TOKEN": canaryRunGroup, "EXTRA": canaryRunExec, "PATH": "/usr/bin:/bin"} {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
	for _, k := range []string{"CLEARED", "OTHER_SECRET", "ML_KEY", "ENVLET_TOKEN_FILE", "ENVLET_SOCKET", "ENVLET_ADMIN_SOCKET"} {
		if _, ok := env[k]; ok {
			t.Errorf("%s reached the program", k)
		}
	}
	// --env-file, with -e winning over it.
	ef := filepath.Join(a.dir, "run.env")
	os.WriteFile(ef, []byte("# comment\nexport FROM_FILE=\"quoted\"\nEXTRA=file\n\n"), 0o644)
	r = a.runCLI(u.member, "run", "--project", "fraud", "--env-file", ef, "-e", "EXTRA=flag", "--", "env")
	if env := envOf(r.stdout); r.code != 0 || env["FROM_FILE"] != "quoted" || env["EXTRA"] != "flag" {
		t.Fatalf("--env-file: %s", r)
	}
	// The program's own exit status comes back; a missing one is 127.
	if r := a.runCLI(u.member, "run", "--project", "fraud", "--", "sh", "-c", "exit 7"); r.code != 7 {
		t.Fatalf("exit status: %s", r)
	}
	if r := a.runCLI(u.member, "run", "--project", "fraud", "--", "no-such-program-x"); r.code != 127 {
		t.Fatalf("missing program: %s", r)
	}
	// The owner runs in fraud too, with no account variables of theirs.
	r = a.runCLI(u.owner, "run", "--project", "fraud", "--", "env")
	if env := envOf(r.stdout); r.code != 0 || env["DB_PASSWORD"] != canaryRunProj || env["MY_TOKEN"] != "" {
		t.Fatalf("owner's run: %s", r)
	}
	a.noRunsLeft("after the runs")
	a.noCanary(canaryRunAcct, canaryRunProj, canaryRunGroup, canaryRunExec, canaryRunOther, canaryRunML)
}

func TestRunRefusals(t *testing.T) {
	a, u := selfFixture(t, "")
	rev := a.revision()
	for _, c := range []struct {
		name string
		uid  uint32
		args []string
		exit int
		code string
	}{
		{"OtherNotMember", u.other, []string{"--project", "fraud"}, 1, "PERMISSION_DENIED"},
		{"MemberOfAnotherProject", u.member, []string{"--project", "ml"}, 1, "PERMISSION_DENIED"},
		{"OwnerOfAnotherProject", u.owner, []string{"--project", "ml"}, 1, "PERMISSION_DENIED"},
		{"NoSuchProject", u.member, []string{"--project", "nope"}, 1, "PERMISSION_DENIED"},
		{"NoProject", u.member, nil, 2, "USAGE"},
		{"ReservedName", u.member, []string{"--project", "fraud", "-e", "API_KEY=" + canaryRunExec}, 1, "ENV_VAR_RESERVED_NAME"},
		{"InvalidName", u.member, []string{"--project", "fraud", "-e", "1BAD=" + canaryRunExec}, 1, "ENV_VAR_INVALID_NAME"},
		{"NotNameValue", u.member, []string{"--project", "fraud", "-e", canaryRunExec}, 2, "USAGE"},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append(append([]string{"run"}, c.args...), "--", "env")
			r := a.runCLI(c.uid, args...)
			wantCode(t, c.name, r, c.exit, c.code)
			if r.stdout != "" {
				t.Fatalf("the program ran: %q", r.stdout)
			}
		})
	}
	// The project that does not exist is refused as one the caller is
	// not in: the same message shape tells nothing.
	a.noRunsLeft("after the refusals")
	if a.revision() != rev {
		t.Fatal("a refused run changed the store")
	}
	a.noCanary(canaryRunAcct, canaryRunProj, canaryRunGroup, canaryRunExec, canaryRunOther, canaryRunML)
}

// blocker is a program that reports its pid and waits: `envlet run` of it
// stays until the test lets it go (SIGTERM through the CLI) or kills the
// CLI.
var blocker = []string{"sh", "-c", `echo "pid $$ G=$G_TOKEN"; exec sleep 1000000`}

func TestRunLifetime(t *testing.T) {
	a, u := selfFixture(t, "max_runs_per_user = 2")
	p := startProc(t, a, u.member, bins.envlet, append([]string{"run", "--project", "fraud", "--"}, blocker...)...)
	prog := p.expect(t, "pid ")
	// While it runs: the caller and admins see it, no one else does.
	ws := a.workloadsAs(u.member)
	if len(ws) != 1 || ws[0].Source != "run" || ws[0].User != uidName(u.member) || ws[0].Project != "fraud" || ws[0].TokenFile == "" {
		t.Fatalf("the member's workload list during the run: %+v", ws)
	}
	if ws := a.workloadsAs(u.other); len(ws) != 0 {
		t.Fatalf("another user sees %+v", ws)
	}
	if ws := a.workloadsAs(0); len(ws) != 1 {
		t.Fatalf("admin sees %+v", ws)
	}
	// The token file is the caller's alone, and the token is no use to
	// another uid: the registration matches the caller's uid too.
	fi, err := os.Stat(ws[0].TokenFile)
	if err != nil || fi.Mode().Perm() != 0o400 || fi.Sys().(*syscall.Stat_t).Uid != u.member {
		t.Fatalf("token file %v %v", fi, err)
	}
	stolen := filepath.Join(a.dir, "stolen-token")
	tok, _ := os.ReadFile(ws[0].TokenFile)
	os.WriteFile(stolen, tok, 0o444)
	r := a.runAs(u.other, u.other, "", []string{"ENVLET_TOKEN_FILE=" + stolen}, bins.exec, "--", "env")
	wantCode(t, "the run's token from another uid", r, 125, "WORKLOAD_UNKNOWN")
	if r := a.runAs(u.other, u.other, "", nil, "/bin/cat", ws[0].TokenFile); r.code == 0 {
		t.Fatal("another uid read the token file")
	}

	// The limit: a second run is fine, a third refused; another user of
	// the project is not held back by it.
	p2 := startProc(t, a, u.member, bins.envlet, append([]string{"run", "--project", "fraud", "--"}, blocker...)...)
	p2.expect(t, "pid ")
	r = a.runCLI(u.member, "run", "--project", "fraud", "--", "true")
	wantCode(t, "a third run", r, 1, "RUN_LIMIT_EXCEEDED")
	if r := a.runCLI(u.member2, "run", "--project", "fraud", "--", "true"); r.code != 0 {
		t.Fatalf("another member's run: %s", r)
	}

	// kill -9 of the CLI: the agent sees the connection close and removes
	// the run; CMD is sent SIGTERM (its parent died) and ends.
	pid := 0
	fmt.Sscanf(prog, "%d", &pid)
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd of the program: %v", err)
	}
	defer unix.Close(pidfd)
	ended := strings.Count(a.log.String(), "run ended")
	p.cmd.Process.Kill()
	p.wait(t)
	a.waitLog("run ended", ended+1)
	if n, err := unix.Poll([]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}, int(hangGuard/time.Millisecond)); n != 1 || err != nil {
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		t.Fatalf("the program outlived its killed run: %v; %q\n%s", err, cmdline, st)
	}
	if ws := a.workloadsAs(0); len(ws) != 1 {
		t.Fatalf("after kill -9 of one run: %+v", ws)
	}
	// SIGTERM to the CLI goes to the program; the run ends with it.
	p2.cmd.Process.Signal(syscall.SIGTERM)
	if code := p2.wait(t); code != 143 {
		t.Fatalf("run ended by SIGTERM: exit %d, want 143", code)
	}
	a.noRunsLeft("after kill -9 and SIGTERM")
	// Nothing in the store either: a restart loads it again.
	a.restart()
	a.noRunsLeft("after a restart")

	// An admin ends a run with workload delete; the caller may not.
	p3 := startProc(t, a, u.member, bins.envlet, append([]string{"run", "--project", "fraud", "--"}, blocker...)...)
	p3.expect(t, "pid ")
	id := a.workloadsAs(u.member)[0].ID
	wantCode(t, "the member deleting their run", a.cliAs(u.member, "workload", "delete", id), 1, "PERMISSION_DENIED")
	a.cli("workload", "delete", id)
	a.noRunsLeft("after an admin deleted the run")
	p3.stderr.waitFor(t, "RUN_ENDED", 1)

	// Audited as runs by that user, in that project; the serve names the
	// group it merged.
	recs := auditRecords(t, a)
	var runs, ends, serves int
	for _, r := range recs {
		if r.WorkloadUser != uidName(u.member) || r.Project != "fraud" {
			continue
		}
		switch r.Action {
		case "run":
			runs++
		case "run-end":
			ends++
		case "serve":
			if strings.Join(r.Groups, ",") == "base" {
				serves++
			}
		}
	}
	if runs != 3 || ends != 3 || serves < 3 {
		t.Fatalf("audit: %d runs, %d ends, %d serves naming base", runs, ends, serves)
	}
	a.noCanary(canaryRunAcct, canaryRunProj, canaryRunGroup, canaryRunExec, canaryRunOther, canaryRunML)
}

func TestRunWatch(t *testing.T) {
	a, u := selfFixture(t, "")
	p := startProc(t, a, u.member, bins.envlet, append([]string{"run", "--project", "fraud", "--watch", "--"}, blocker...)...)
	if v := p.expect(t, "pid "); !strings.HasSuffix(v, "G="+canaryRunGroup) {
		t.Fatalf("first start: %q", v)
	}
	a.cli("group", "set", "base", "G_TOKEN", "rotated")
	if v := p.expect(t, "pid "); !strings.HasSuffix(v, "G=rotated") {
		t.Fatalf("after the rotation: %q", v)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t); code != 143 {
		t.Fatalf("exit %d, want 143", code)
	}
	a.noRunsLeft("after the watched run")
	a.noCanary(canaryRunAcct, canaryRunProj, canaryRunGroup, canaryRunOther, canaryRunML)
}

type auditRec struct {
	Action       string            `json:"action"`
	User         string            `json:"user"`
	Scope        string            `json:"scope"`
	Name         string            `json:"name"`
	WorkloadUser string            `json:"workload_user"`
	Project      string            `json:"project"`
	Groups       []string          `json:"groups"`
	HMAC         string            `json:"hmac"`
	HMACs        map[string]string `json:"hmacs"`
	Code         string            `json:"code"`
	Time         string            `json:"time"`
}

func auditRecords(t *testing.T, a *agentProc) []auditRec {
	t.Helper()
	b, err := os.ReadFile(a.audit)
	if err != nil {
		t.Fatal(err)
	}
	var out []auditRec
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var r auditRec
		if json.Unmarshal(line, &r) == nil {
			out = append(out, r)
		}
	}
	return out
}

func TestWorkloadUpdate(t *testing.T) {
	a, u := selfFixture(t, "")
	wuid := freeUID(t)
	reg := map[string]any{"id": "w1", "user": uidName(u.member), "project": "fraud", "match": map[string]any{"uid": wuid, "token": true},
		"runtime": map[string]string{"LR": "0.1"}}
	a.register(reg)
	w := a.workloadsAs(0)[0]
	tokBefore, _ := os.ReadFile(w.TokenFile)
	tokEnv := []string{"ENVLET_TOKEN_FILE=" + w.TokenFile}
	env, r := a.launchEnv(wuid, wuid, tokEnv...)
	if env == nil || env["LR"] != "0.1" {
		t.Fatalf("before the update: %s", r)
	}
	watch := startProc(t, a, wuid, bins.exec, "--token-file", w.TokenFile, "--watch", "--on-change", "exit", "--", "sleep", "1000000")
	a.waitLog("watching", 1)

	write := func(doc map[string]any) string {
		b, _ := json.Marshal(doc)
		p := filepath.Join(a.dir, "update.json")
		os.WriteFile(p, b, 0o644)
		return p
	}
	with := func(k string, v any) map[string]any {
		d := map[string]any{}
		for kk, vv := range reg {
			d[kk] = vv
		}
		d[k] = v
		return d
	}
	rev := a.revision()
	// Refused for every role but admin, whatever the body.
	for _, s := range []uint32{u.owner, u.member, u.other} {
		r := a.cliAs(s, "workload", "update", "w1", write(with("runtime", map[string]string{"LR": canaryUpd})))
		wantCode(t, fmt.Sprintf("update as %d", s), r, 1, "PERMISSION_DENIED")
	}
	// id, user, project and match may not change.
	for _, c := range []struct {
		name string
		doc  map[string]any
	}{
		{"User", with("user", uidName(u.other))},
		{"Project", with("project", "ml")},
		{"Match", with("match", map[string]any{"uid": u.other, "token": true})},
		{"TokenOff", with("match", map[string]any{"uid": wuid})},
		{"ID", with("id", "w2")},
	} {
		r := a.runAs(0, 0, "", nil, bins.envlet, "workload", "update", "w1", write(c.doc))
		wantCode(t, "change of "+c.name, r, 1, "WORKLOAD_FIELD_IMMUTABLE")
	}
	r = a.runAs(0, 0, "", nil, bins.envlet, "workload", "update", "nope", write(with("id", "nope")))
	wantCode(t, "update of a missing workload", r, 1, "WORKLOAD_NOT_FOUND")
	if a.revision() != rev {
		t.Fatal("a refused update changed the store")
	}

	// runtime, execution and mount may: the running launcher hears of it,
	// the list shows the workload stale until it asks again.
	out := a.cli("workload", "update", "--json", "w1", write(with("runtime", map[string]string{"LR": "0.2"})))
	var reply struct {
		ID        string `json:"id"`
		TokenFile string `json:"token_file"`
	}
	if err := json.Unmarshal([]byte(out), &reply); err != nil || reply.ID != "w1" || reply.TokenFile != w.TokenFile {
		t.Fatalf("update reply %q: %v", out, err)
	}
	if code := watch.wait(t); code != 143 {
		t.Fatalf("the --watch --on-change exit launcher: exit %d, want 143", code)
	}
	// Without a watcher to fetch it, the new environment waits: stale.
	a.cli("workload", "update", "w1", write(with("runtime", map[string]string{"LR": canaryUpd, "EPOCHS": "3"})))
	w = a.workloadsAs(0)[0]
	if !w.Stale || strings.Join(w.Runtime, ",") != "EPOCHS,LR" {
		t.Fatalf("after the update: %+v", w)
	}
	if tok, _ := os.ReadFile(w.TokenFile); !bytes.Equal(tok, tokBefore) {
		t.Fatal("the update changed the token")
	}
	env, r = a.launchEnv(wuid, wuid, tokEnv...)
	if env == nil || env["LR"] != canaryUpd || env["EPOCHS"] != "3" {
		t.Fatalf("after the update: %s", r)
	}
	if w := a.workloadsAs(0)[0]; w.Stale {
		t.Fatalf("still stale after a fetch: %+v", w)
	}
	// mount on, then off: the mount follows.
	a.cli("workload", "update", "w1", write(with("mount", true)))
	a.waitLog("mount written: workload=w1", 1)
	mounted, err := os.ReadFile(filepath.Join(a.dir, "mounts", "w1", "env"))
	if err != nil || !strings.Contains(string(mounted), "LR=\"0.1\"") {
		t.Fatalf("mount after the update: %v", err)
	}
	a.cli("workload", "update", "w1", write(reg))
	a.waitLog("mount removed: workload=w1", 1)
	if _, err := os.Stat(filepath.Join(a.dir, "mounts", "w1")); !os.IsNotExist(err) {
		t.Fatalf("mount left after mount went false: %v", err)
	}
	// A workloads.d registration is edited in its file.
	os.MkdirAll(a.workDir, 0o755)
	os.WriteFile(filepath.Join(a.workDir, "f1.json"), []byte(`{"id":"f1","user":"x","project":"fraud","match":{"uid":1}}`), 0o644)
	a.waitLog("workload registered: workload=f1", 1)
	r = a.runAs(0, 0, "", nil, bins.envlet, "workload", "update", "f1", write(map[string]any{"id": "f1", "user": "x", "project": "fraud", "match": map[string]any{"uid": 1}}))
	wantCode(t, "update of a file registration", r, 1, "INVALID_REQUEST")
	// The update is audited with the workload's user and project.
	found := false
	for _, r := range auditRecords(t, a) {
		if r.Action == "update" && r.Scope == "workload:w1" && r.WorkloadUser == uidName(u.member) && r.Project == "fraud" {
			found = true
		}
	}
	if !found {
		t.Fatal("no update record naming the workload's user and project")
	}
	a.noCanary(canaryUpd, canaryRunAcct, canaryRunProj, canaryRunGroup, canaryRunOther, canaryRunML)
}

func TestAuditList(t *testing.T) {
	a, u := selfFixture(t, "")
	a.register(map[string]any{"id": "wm", "user": uidName(u.member), "project": "fraud", "match": map[string]any{"uid": u.member2}})
	if env, r := a.launchEnv(u.member2, u.member2); env == nil {
		t.Fatalf("serve: %s", r)
	}
	a.register(map[string]any{"id": "wml", "user": "mluser", "project": "ml", "match": map[string]any{"uid": u.other}})
	// A rotated, compressed file from before: read as well.
	old := `{"time":"2020-01-02T03:04:05Z","action":"set","uid":0,"user":"root","scope":"project:fraud","name":"ROTATED","hmac":"ab","socket":"admin"}` + "\n"
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(old))
	zw.Close()
	os.WriteFile(a.audit+".1", nil, 0o600)
	os.WriteFile(a.audit+".2.gz", gz.Bytes(), 0o600)

	list := func(uid uint32, args ...string) ([]auditRec, result) {
		t.Helper()
		r := a.cliAs(uid, append([]string{"audit", "list", "--json"}, args...)...)
		var out struct {
			Records []auditRec `json:"records"`
			Files   []string   `json:"files"`
		}
		if r.code == 0 {
			if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
				t.Fatal(err)
			}
		}
		return out.Records, r
	}
	has := func(recs []auditRec, f func(auditRec) bool) bool {
		for _, r := range recs {
			if f(r) {
				return true
			}
		}
		return false
	}
	// Admin: everything, the rotated file included; filters narrow it.
	all, r := list(0)
	if r.code != 0 || !has(all, func(r auditRec) bool { return r.Name == "ROTATED" }) || !has(all, func(r auditRec) bool { return r.Project == "ml" }) {
		t.Fatalf("admin's list: %s", r)
	}
	serves, _ := list(0, "--action", "serve", "--group", "base", "--user", uidName(u.member))
	if len(serves) != 1 || serves[0].Project != "fraud" || len(serves[0].HMACs) == 0 {
		t.Fatalf("serves of base to the member: %+v", serves)
	}
	regs, _ := list(0, "--action", "register", "--project", "ml")
	if len(regs) != 1 || regs[0].WorkloadUser != "mluser" {
		t.Fatalf("registrations in ml: %+v", regs)
	}
	recent, _ := list(0, "--since", "1h", "--project", "fraud")
	if has(recent, func(r auditRec) bool { return r.Name == "ROTATED" }) || len(recent) == 0 {
		t.Fatalf("--since 1h: %+v", recent)
	}
	old2020, _ := list(0, "--until", "2021-01-01T00:00:00Z")
	if len(old2020) != 1 || old2020[0].Name != "ROTATED" {
		t.Fatalf("--until 2021: %+v", old2020)
	}
	// The owner of fraud: fraud's records only, without HMACs.
	own, r := list(u.owner)
	if r.code != 0 || len(own) == 0 {
		t.Fatalf("owner's list: %s", r)
	}
	for _, rec := range own {
		if rec.Project != "fraud" && rec.Scope != "project:fraud" && rec.Scope != "group:base" && !strings.HasSuffix(rec.Scope, ",project:fraud") {
			t.Fatalf("the owner sees a record of elsewhere: %+v", rec)
		}
		if rec.HMAC != "" || rec.HMACs != nil {
			t.Fatalf("the owner sees HMACs: %+v", rec)
		}
	}
	if !has(own, func(r auditRec) bool { return r.Action == "serve" && r.Project == "fraud" }) {
		t.Fatal("the owner does not see the serves in their project")
	}
	// Refusals: the owner for another project; a member; another user.
	_, r = list(u.owner, "--project", "ml")
	wantCode(t, "owner of fraud reading ml", r, 1, "PERMISSION_DENIED")
	_, r = list(u.member)
	wantCode(t, "member", r, 1, "PERMISSION_DENIED")
	_, r = list(u.member, "--project", "fraud")
	wantCode(t, "member, own project", r, 1, "PERMISSION_DENIED")
	_, r = list(u.other)
	wantCode(t, "another user", r, 1, "PERMISSION_DENIED")
	_, r = list(0, "--since", "yesterday")
	wantCode(t, "a bad time", r, 1, "INVALID_REQUEST")
	// The table form, as a person reads it.
	if out := a.cli("audit", "list", "--action", "serve"); !strings.Contains(out, "base") || !strings.Contains(out, "fraud") {
		t.Fatalf("table: %s", out)
	}
	a.noCanary(canaryRunAcct, canaryRunProj, canaryRunGroup, canaryRunOther, canaryRunML)
}
