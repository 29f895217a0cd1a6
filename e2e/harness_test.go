package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// bins holds the binaries built once for the whole run.
var bins struct{ envletd, envlet, exec string }

func TestMain(m *testing.M) {
	if os.Getuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e: these tests run workloads as other uids and need root; skipping")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "envlet-bin-")
	if err != nil {
		panic(err)
	}
	os.Chmod(dir, 0o755)
	root, _ := filepath.Abs("..")
	build := func(out, pkg string, static bool) string {
		p := filepath.Join(dir, out)
		cmd := exec.Command("go", "build", "-trimpath", "-o", p, pkg)
		if static {
			cmd.Args = []string{"go", "build", "-trimpath", "-ldflags=-s -w", "-o", p, pkg}
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		}
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, b)
			os.Exit(1)
		}
		return p
	}
	bins.envletd = build("envletd", "./cmd/envletd", false)
	bins.envlet = build("envlet", "./cmd/envlet", false)
	bins.exec = build("envlet-exec", "./cmd/envlet-exec", true)
	code := m.Run()
	stopE2EEtcd()
	removeContainerImages()
	os.RemoveAll(dir)
	os.Exit(code)
}

// logBuf collects a process's output and lets a test wait for a line.
type logBuf struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	more chan struct{}
}

func newLogBuf() *logBuf { return &logBuf{more: make(chan struct{})} }

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	close(l.more)
	l.more = make(chan struct{})
	return len(p), nil
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// hangGuard bounds every wait of the suite for an event: generous, since a
// loaded 2-core machine (CI) can take seconds for what usually takes
// milliseconds. It guards against a hang; it is not a timing assertion.
const hangGuard = 60 * time.Second

// waitFor blocks until the output holds s n times, failing the test if that
// has not happened within hangGuard.
func (l *logBuf) waitFor(t *testing.T, s string, n int) {
	t.Helper()
	limit := time.After(hangGuard)
	for {
		l.mu.Lock()
		got, ch := strings.Count(l.buf.String(), s), l.more
		l.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-ch:
		case <-limit:
			t.Fatalf("waited for %q ×%d in the agent log; log:\n%s", s, n, l.String())
		}
	}
}

// agentProc is a running envletd with everything in its own directory.
type agentProc struct {
	t         *testing.T
	dir       string
	config    string
	stateDir  string
	workSock  string
	adminSock string
	workDir   string
	audit     string
	cmd       *exec.Cmd
	log       *logBuf
	done      chan struct{}
	starts    int
	wrap      []string // a command the agent runs under (setpriv …), for the next start

	mu         sync.Mutex
	transcript bytes.Buffer // every CLI and launcher output, for canary checks

	uids map[string]uint32 // the test's uids by role (uid)
}

// startAgent writes a config with the given [defaults] lines and starts the
// agent in production mode (not -dev) with every path inside a new
// directory.
func startAgent(t *testing.T, defaults string) *agentProc {
	t.Helper()
	return startAgentConf(t, "", defaults)
}

// startAgentConf is startAgent with extra `key = value` config lines.
func startAgentConf(t *testing.T, extraConfig, defaults string) *agentProc {
	t.Helper()
	dir, err := os.MkdirTemp("", "el")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	a := &agentProc{
		t: t, dir: dir,
		config:    filepath.Join(dir, "envletd.conf"),
		stateDir:  filepath.Join(dir, "state"),
		workSock:  filepath.Join(dir, "workload", "workload.sock"), // a directory of its own, as containers mount it
		adminSock: filepath.Join(dir, "a.sock"),
		workDir:   filepath.Join(dir, "workloads.d"),
		audit:     filepath.Join(dir, "audit.log"),
	}
	conf := fmt.Sprintf(`# test config
state_dir = %s
key_file = %s
workload_socket = %s
admin_socket = %s
credentials_socket = %s
workloads_dir = %s
mount_dir = %s
audit_log = %s
token_dir = %s
log_level = debug
%s
[defaults]
%s
`, a.stateDir, filepath.Join(dir, "keyring"), a.workSock, a.adminSock, filepath.Join(dir, "c.sock"),
		a.workDir, filepath.Join(dir, "mounts"), a.audit, filepath.Join(dir, "tokens"), extraConfig, defaults)
	conf = e2eConfig(t, conf) // ENVLET_E2E_BACKEND=etcd: on etcd (etcd_test.go)
	if err := os.WriteFile(a.config, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	a.start()
	t.Cleanup(a.stop)
	return a
}

// startDevAgent runs envletd -dev as uid, the way a developer would, with
// -dir a.dir/d; a.workSock and a.adminSock are what it exports.
func startDevAgent(t *testing.T, uid uint32) *agentProc {
	t.Helper()
	dir, _ := os.MkdirTemp("", "eldev")
	os.Chmod(dir, 0o777)
	t.Cleanup(func() { os.RemoveAll(dir) })
	cmd := exec.Command(bins.envletd, "-dev", "-dir", filepath.Join(dir, "d"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	cmd.Env = []string{"PATH=/usr/bin:/bin", "TMPDIR=" + dir}
	logs := newLogBuf()
	cmd.Stderr = logs
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	sc := bufio.NewScanner(stdout)
	exports := map[string]string{}
	for len(exports) < 2 && sc.Scan() {
		k, v, _ := strings.Cut(strings.TrimPrefix(sc.Text(), "export "), "=")
		exports[k] = v
	}
	if exports["ENVLET_ADMIN_SOCKET"] == "" {
		t.Fatalf("envletd -dev printed no exports; log:\n%s", logs.String())
	}
	return &agentProc{t: t, dir: dir, workSock: exports["ENVLET_SOCKET"], adminSock: exports["ENVLET_ADMIN_SOCKET"],
		log: logs, audit: filepath.Join(dir, "d", "audit.log"), stateDir: filepath.Join(dir, "d", "state"), cmd: cmd}
}

func (a *agentProc) start() {
	a.t.Helper()
	a.starts++
	a.log = newLogBuf()
	argv := append(append([]string(nil), a.wrap...), bins.envletd, "-config", a.config)
	a.cmd = exec.Command(argv[0], argv[1:]...)
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	a.done = make(chan struct{})
	go func() { a.cmd.Wait(); close(a.done) }()
	a.waitLog("serving:", 1)
}

func (a *agentProc) waitLog(s string, n int) { a.t.Helper(); a.log.waitFor(a.t, s, n) }

// stop ends the agent with SIGTERM and waits for it.
func (a *agentProc) stop() {
	select {
	case <-a.done:
		return
	default:
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	<-a.done
	a.record("agent log", a.log.String())
}

// kill ends the agent with SIGKILL: no chance to flush anything.
func (a *agentProc) kill() {
	a.cmd.Process.Kill()
	<-a.done
	a.record("agent log", a.log.String())
}

func (a *agentProc) restart() { a.stop(); a.start() }

func (a *agentProc) record(what, out string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	fmt.Fprintf(&a.transcript, "--- %s\n%s\n", what, out)
}

// result is what a command did.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
}

// runAs runs a binary as uid:gid (0 = as the test) with env added to a
// minimal environment.
func (a *agentProc) runAs(uid, gid uint32, stdin string, env []string, name string, args ...string) result {
	a.t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=/", "ENVLET_ADMIN_SOCKET=" + a.adminSock, "ENVLET_SOCKET=" + a.workSock}, env...)
	cmd.Dir = "/"
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if uid != 0 || gid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	}
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		a.t.Fatalf("run %s: %v", name, err)
	}
	shown := r.stdout + r.stderr
	// A workload's own output and an explicit --reveal hold values by
	// design; everything else is searched for canaries.
	if name == bins.exec || contains(args, "--reveal") || contains(args, "--decode") || (name == bins.envlet && len(args) > 0 && args[0] == "run") {
		shown = r.stderr
	}
	// The header names the command, not its arguments: a value given on
	// the command line is the test's input, not an output.
	a.record(fmt.Sprintf("%s %s (uid %d)", filepath.Base(name), strings.Join(args[:min(2, len(args))], " "), uid), shown)
	return r
}

// cli runs the admin CLI as root and fails the test if it fails.
func (a *agentProc) cli(args ...string) string {
	a.t.Helper()
	r := a.runAs(0, 0, "", nil, bins.envlet, args...)
	if r.code != 0 {
		a.t.Fatalf("envlet %s: %s", strings.Join(args, " "), r)
	}
	return r.stdout
}

// cliAs runs the admin CLI as uid, whatever its outcome.
func (a *agentProc) cliAs(uid uint32, args ...string) result {
	a.t.Helper()
	return a.runAs(uid, uid, "", nil, bins.envlet, args...)
}

// register writes a registration file through the CLI.
func (a *agentProc) register(reg map[string]any) {
	a.t.Helper()
	b, _ := json.Marshal(reg)
	p := filepath.Join(a.dir, fmt.Sprintf("reg-%s.json", reg["id"]))
	if err := os.WriteFile(p, b, 0o600); err != nil {
		a.t.Fatal(err)
	}
	a.cli("workload", "register", p)
}

// launchEnv runs `envlet-exec -- /usr/bin/env` as uid:gid with the given
// launcher environment and returns the child's environment as a map.
func (a *agentProc) launchEnv(uid, gid uint32, env ...string) (map[string]string, result) {
	a.t.Helper()
	r := a.runAs(uid, gid, "", env, bins.exec, "--", "env")
	if r.code != 0 {
		return nil, r
	}
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			m[k] = v
		}
	}
	return m, r
}

// noCanary fails if any canary shows up in anything the agent, the CLI or
// the launcher printed, in the audit log, or in clear in the state dir.
func (a *agentProc) noCanary(canaries ...string) {
	a.t.Helper()
	places := map[string]string{"transcript": a.transcript.String(), "agent log": a.log.String()}
	if b, err := os.ReadFile(a.audit); err == nil {
		places["audit log"] = string(b)
	}
	if where, dump := a.etcdDump(); where != "" {
		places[where] = dump
	}
	filepath.Walk(a.stateDir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			places[p] = string(b)
		}
		return nil
	})
	for where, text := range places {
		for _, c := range canaries {
			if strings.Contains(text, c) {
				a.t.Errorf("canary %q found in %s", c, where)
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
