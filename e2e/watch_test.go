package e2e

import (
	"bufio"
	"context"
	"encoding/json"
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
)

// envlet-exec --watch against the real agent: a change made with the CLI
// reaches a running program, and the launcher rides out an agent restart
// and a deregistration. The launcher's own behaviour (signals, reaping,
// grace, exit status) is tested in package launcher.

// watched is a running envlet-exec --watch.
type watched struct {
	cmd    *exec.Cmd
	lines  chan string // the program's stdout
	stderr *logBuf
	done   chan struct{}
	code   int
}

// startWatch runs envlet-exec with args as uid:uid, against a.
func startWatch(t *testing.T, a *agentProc, uid uint32, args ...string) *watched {
	t.Helper()
	return startProc(t, a, uid, bins.exec, args...)
}

// startProc runs bin (envlet-exec, or envlet run) with args as uid:uid,
// against a; its stdout comes line by line to p.lines.
func startProc(t *testing.T, a *agentProc, uid uint32, bin string, args ...string) *watched {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "ENVLET_SOCKET=" + a.workSock, "ENVLET_ADMIN_SOCKET=" + a.adminSock}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	p := startWatched(t, cmd)
	t.Cleanup(func() {
		// SIGTERM reaches the program through the launcher.
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
		a.record(filepath.Base(bin)+" (uid "+strconv.Itoa(int(uid))+") stderr", p.stderr.String())
	})
	return p
}

// startWatched starts cmd with its stdout coming line by line to p.lines
// and its stderr to p.stderr; p.done closes once it has exited (p.code).
// The caller stops it in its own cleanup.
func startWatched(t *testing.T, cmd *exec.Cmd) *watched {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &watched{cmd: cmd, lines: make(chan string, 100), stderr: newLogBuf(), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = w, p.stderr
	// The program holds stderr too: give up on the pipe soon after the
	// launcher has gone, should the program outlive it.
	p.cmd.WaitDelay = time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		r.Close()
		close(p.lines)
	}()
	go func() {
		err := p.cmd.Wait()
		if ee, ok := err.(*exec.ExitError); ok {
			p.code = ee.ExitCode()
		}
		close(p.done)
	}()
	return p
}

// expect reads the program's next line, fails unless it starts with
// prefix, and returns the rest.
func (p *watched) expect(t *testing.T, prefix string) string {
	t.Helper()
	select {
	case line, ok := <-p.lines:
		if !ok || !strings.HasPrefix(line, prefix) {
			t.Fatalf("the program wrote %q (open %v); want a line %q; launcher stderr:\n%s", line, ok, prefix, p.stderr.String())
		}
		return strings.TrimPrefix(line, prefix)
	case <-time.After(hangGuard):
		t.Fatalf("no line %q from the program; launcher stderr:\n%s", prefix, p.stderr.String())
	}
	return ""
}

func (p *watched) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(hangGuard):
		t.Fatal("envlet-exec did not exit")
	}
	return 0
}

// printer prints "start PID VALUE-OF-V" and then sleeps as its shell's pid
// until a signal ends it.
var printer = []string{"sh", "-c", `echo "start $$ $V"; exec sleep 1000000`}

// watchFixture: user wuser, member of p, with V=one, and workload svc run
// by uid a.uid("svc").
func watchFixture(t *testing.T) *agentProc {
	a := startAgent(t, "PATH = /usr/bin:/bin")
	a.cli("project", "create", "p")
	a.cli("project", "add-member", "p", "wuser")
	a.cli("env", "set", "--user", "wuser", "V", "one")
	a.cli("env", "set", "--user", "wuser", "API_TOKEN_X", canaryWatch)
	a.register(map[string]any{"id": "svc", "user": "wuser", "project": "p", "match": map[string]any{"uid": a.uid("svc")}})
	return a
}

const canaryWatch = "c4n4ry-w4tch-5e1f"

func TestWatchRestartOnChange(t *testing.T) {
	a := watchFixture(t)
	p := startWatch(t, a, a.uid("svc"), append([]string{"--watch", "--"}, printer...)...)
	if v := p.expect(t, "start "); !strings.HasSuffix(v, " one") {
		t.Fatalf("first start: %q", v)
	}
	a.cli("env", "set", "--user", "wuser", "V", "two")
	if v := p.expect(t, "start "); !strings.HasSuffix(v, " two") {
		t.Fatalf("after the change: %q", v)
	}
	// The restart fetched the new environment: the workload is not stale.
	var list []struct {
		ID       string `json:"id"`
		Revision int64  `json:"revision"`
		Stale    bool   `json:"stale"`
	}
	if err := json.Unmarshal([]byte(a.cli("workload", "list", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Stale || list[0].Revision != a.revision() {
		t.Fatalf("workload list after the restart: %+v, store revision %d", list, a.revision())
	}
	// A change to someone else does not restart it: the next line is the
	// next change of its own.
	a.cli("env", "set", "--user", "someone-else", "V", "x")
	a.cli("env", "set", "--user", "wuser", "V", "three")
	if v := p.expect(t, "start "); !strings.HasSuffix(v, " three") {
		t.Fatalf("after the third change: %q", v)
	}
	// SIGTERM goes to the program; sleep dies of it: 128+15.
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t); code != 143 {
		t.Fatalf("exit %d, want 143", code)
	}
	a.noCanary(canaryWatch)
}

func TestWatchSignalOnChange(t *testing.T) {
	a := watchFixture(t)
	// The shell records SIGHUP with the V it holds: the same process, the
	// old environment.
	p := startWatch(t, a, a.uid("svc"), "--watch", "--on-change", "signal:HUP", "--",
		"sh", "-c", `trap 'echo "HUP $V"' HUP; echo "start $$ $V"; while :; do sleep 1000000 & wait $!; done`)
	pid, _, _ := strings.Cut(p.expect(t, "start "), " ")
	if n, err := strconv.Atoi(pid); err == nil {
		t.Cleanup(func() { syscall.Kill(-n, syscall.SIGKILL) }) // the shell's sleeps
	}
	a.cli("env", "set", "--user", "wuser", "V", "two")
	p.expect(t, "HUP one")
	a.cli("project", "env", "set", "p", "W", "w")
	p.expect(t, "HUP one")
}

// The agent restarts: the program runs on, the launcher reconnects, and
// the next change restarts the program as before.
func TestWatchAgentRestart(t *testing.T) {
	a := watchFixture(t)
	p := startWatch(t, a, a.uid("svc"), append([]string{"--watch", "--"}, printer...)...)
	p.expect(t, "start ")
	a.waitLog("watching: workload=svc", 1)
	a.restart()
	p.stderr.waitFor(t, "envlet-exec: WATCH_LOST: ", 1)
	a.waitLog("watching: workload=svc", 1) // a.restart gave a fresh log
	p.stderr.waitFor(t, "envlet-exec: WATCH_RESUMED: ", 1)
	a.cli("env", "set", "--user", "wuser", "V", "two")
	if v := p.expect(t, "start "); !strings.HasSuffix(v, " two") {
		t.Fatalf("after the change: %q", v)
	}
}

// Deregistration ends the watch; the program keeps running (the agent
// now refuses the launcher, which keeps trying) until it is told to stop.
func TestWatchDeregistered(t *testing.T) {
	a := watchFixture(t)
	p := startWatch(t, a, a.uid("svc"), append([]string{"--watch", "--"}, printer...)...)
	p.expect(t, "start ")
	a.waitLog("watching: workload=svc", 1)
	a.cli("workload", "delete", "svc")
	p.stderr.waitFor(t, "envlet-exec: WATCH_LOST: ", 1)
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t); code != 143 {
		t.Fatalf("exit %d, want 143 from the program that was still running", code)
	}
}

// BenchmarkWatchRestart: the time from a change through the admin API (PUT
// of an account variable) to the supervised program running with the new
// value, against the time to start the same program directly (fork, exec,
// first line) — the floor of any restart.
//
//	go test -run '^$' -bench WatchRestart -benchtime 1000x ./e2e/
func BenchmarkWatchRestart(b *testing.B) {
	dir, err := os.MkdirTemp("", "elb")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
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
	admin := filepath.Join(dir, "admin.sock")
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
	run(`{"id":"bench","user":"benchuser","project":"bench","match":{"uid":0}}`, "workload", "register", "-")

	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", admin)
	}}}
	put := func(v string) {
		req, _ := http.NewRequest("PUT", "http://envlet/v1/users/benchuser/env/V", strings.NewReader(`{"value":"`+v+`"}`))
		resp, err := client.Do(req)
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("PUT V: %v %v", err, resp)
		}
		resp.Body.Close()
	}

	// The supervised program: print V, then sleep until SIGTERM.
	lines := make(chan string, 16)
	r, w, _ := os.Pipe()
	cmd := exec.Command(bins.exec, "--watch", "--", "sh", "-c", `echo "$V"; exec sleep 1000000`)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, env...)
	cmd.Stdout = w
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	w.Close()
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	await := func(want string) {
		for line := range lines {
			if line == want {
				return
			}
		}
		b.Fatalf("the program's output ended before %q", want)
	}
	await("0")

	// The floor: the same program started directly.
	floor := make([]time.Duration, 0, b.N)
	for i := range min(b.N, 200) {
		t0 := time.Now()
		c := exec.Command("sh", "-c", `echo "$V"; exec sleep 1000000`)
		c.Env = []string{"PATH=/usr/bin:/bin", "V=" + strconv.Itoa(i)}
		o, _ := c.StdoutPipe()
		c.Start()
		bufio.NewReader(o).ReadString('\n')
		floor = append(floor, time.Since(t0))
		c.Process.Kill()
		c.Wait()
	}

	// The change alone: a PUT that no running program sees (another
	// user's variable), committed to the store with an fsync.
	putOnly := make([]time.Duration, 0, b.N)
	for i := range min(b.N, 200) {
		t0 := time.Now()
		req, _ := http.NewRequest("PUT", "http://envlet/v1/users/someone-else/env/V", strings.NewReader(`{"value":"`+strconv.Itoa(i)+`"}`))
		resp, err := client.Do(req)
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("PUT: %v %v", err, resp)
		}
		resp.Body.Close()
		putOnly = append(putOnly, time.Since(t0))
	}

	b.ResetTimer()
	took := make([]time.Duration, 0, b.N)
	for i := 1; i <= b.N; i++ {
		v := strconv.Itoa(i)
		t0 := time.Now()
		put(v)
		await(v)
		took = append(took, time.Since(t0))
	}
	b.StopTimer()
	p50, p99 := percentile(took, 50), percentile(took, 99)
	f50 := percentile(floor, 50)
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	u50 := percentile(putOnly, 50)
	row := "%-62s %9s %9s\n"
	b.Logf("\n"+row+row+row+row+"ratio p50 / (PUT p50 + floor p50): %.1f×",
		fmt.Sprintf("over %d changes", len(took)), "p50", "p99",
		"admin PUT -> supervised program restarted with the new value", p50.Round(time.Microsecond), p99.Round(time.Microsecond),
		"the admin PUT alone (a variable no program sees)", u50.Round(time.Microsecond), percentile(putOnly, 99).Round(time.Microsecond),
		"floor: fork+exec of the same program to its first line", f50.Round(time.Microsecond), percentile(floor, 99).Round(time.Microsecond),
		float64(p50)/float64(u50+f50))
}

func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}
