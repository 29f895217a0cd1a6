package launcher

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/envlet/envlet/agent/wire"
	"golang.org/x/sys/unix"
)

// bin is the real envlet-exec, built once for the whole run: the tests
// check what a process sees, so they run the binary, not Main.
var bin string

func TestMain(m *testing.M) {
	if mode := os.Getenv("ELTEST_CHILD"); mode != "" {
		// This binary is a supervised program of a --watch test.
		os.Exit(child(mode))
	}
	dir, err := os.MkdirTemp("", "el-bin")
	if err != nil {
		panic(err)
	}
	// Reachable by the unprivileged user of TestUnprivilegedCaller.
	if err := os.Chmod(dir, 0o755); err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "envlet-exec")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/envlet/envlet/cmd/envlet-exec").CombinedOutput()
	if err != nil {
		os.Stderr.Write(out)
		panic("build envlet-exec: " + err.Error())
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Canaries: values that must never show in anything the launcher prints.
const (
	canaryValue = "c4n4ry-v4lue-7f3a"
	canaryToken = "c4n4ry-t0ken-91bd"
)

// seen is one request the test agent received.
type seen struct {
	req wire.Request
	err error  // from decoding the request
	uid uint32 // of the peer, from SO_PEERCRED
}

// testAgent answers the workload protocol on a real Unix socket. reply
// returns the bytes to write back, nil to close without a word, or an empty
// slice (silent) to say nothing until the launcher hangs up.
type testAgent struct {
	sock string
	dir  string

	mu   sync.Mutex
	reqs []seen
}

func startAgent(t *testing.T, reply func(wire.Request) []byte) *testAgent {
	t.Helper()
	// A short directory: sun_path holds 108 bytes, t.TempDir can be longer.
	dir, err := os.MkdirTemp("", "el")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return startAgentAt(t, filepath.Join(dir, "w.sock"), reply)
}

// startAgentAt is startAgent on a socket path of the caller's.
func startAgentAt(t *testing.T, sock string, reply func(wire.Request) []byte) *testAgent {
	t.Helper()
	dir := filepath.Dir(sock)
	a := &testAgent{sock: sock, dir: dir}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: a.sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	// Open to every uid, as the real workload socket is (mode 0666).
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(a.sock, 0o666); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			a.handle(c, reply)
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return a
}

func (a *testAgent) handle(c *net.UnixConn, reply func(wire.Request) []byte) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	var s seen
	if raw, err := c.SyscallConn(); err == nil {
		raw.Control(func(fd uintptr) {
			if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
				s.uid = cred.Uid
			}
		})
	}
	typ, p, err := wire.ReadFrame(c, nil)
	if err == nil {
		s.req, err = wire.DecodeRequest(typ, p)
	}
	s.err = err
	a.mu.Lock()
	a.reqs = append(a.reqs, s)
	a.mu.Unlock()
	if err != nil {
		return
	}
	switch out := reply(s.req); {
	case out == nil:
	case len(out) == 0:
		io.Copy(io.Discard, c) // silent: wait for the launcher to give up
	default:
		c.Write(out)
	}
}

// silent keeps the connection open and says nothing.
func silent(wire.Request) []byte { return []byte{} }

func (a *testAgent) requests() []seen {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.reqs)
}

// envReply answers every request with the same Env frame.
func envReply(entries ...wire.Entry) func(wire.Request) []byte {
	frame := wire.AppendEnv(nil, 1, entries)
	return func(wire.Request) []byte { return frame }
}

func set(name, value string) wire.Entry { return wire.Entry{Name: name, Value: []byte(value)} }
func unset(name string) wire.Entry      { return wire.Entry{Name: name, Unset: true} }

type result struct {
	stdout, stderr string
	code           int
}

// launch runs envlet-exec with exactly env and args.
func launch(t *testing.T, cred *syscall.Credential, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	code := 0
	switch {
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	case err != nil:
		t.Fatalf("run envlet-exec: %v", err)
	}
	return result{stdout.String(), stderr.String(), code}
}

// writeFile writes a file in a fresh directory and returns its path.
func writeFile(t *testing.T, name, content string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestEnvApplied(t *testing.T) {
	t.Parallel()
	a := startAgent(t, envReply(
		set("B", "2"),
		set("A", "3"),
		unset("INHERITED"),
		set("C", "x y=z ü"),
		set("A", "4"), // a later entry wins
		unset("NEVER_SET"),
		set("EMPTY", ""),
	))
	token := writeFile(t, "token", "tok\n", 0o600)
	r := launch(t, nil, []string{
		"PATH=/usr/bin:/bin",
		"KEEP=k",
		"A=old",
		"ENVLET_SOCKET=" + a.sock,
		"INHERITED=yes",
		"ENVLET_TOKEN_FILE=" + token,
		"ENVLET_TIMEOUT=5",
		"ENVLET_ANY_OTHER=z",
		"LAST=l",
	}, "--", "/usr/bin/env")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	// Existing names keep their place, new ones follow in the order set,
	// unset and ENVLET_* names are gone.
	want := []string{"PATH=/usr/bin:/bin", "KEEP=k", "A=4", "LAST=l", "B=2", "C=x y=z ü", "EMPTY="}
	if got := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n"); !slices.Equal(got, want) {
		t.Fatalf("child saw\n%q\nwant\n%q", got, want)
	}
}

func TestProgramFoundOnMergedPath(t *testing.T) {
	t.Parallel()
	// Only the agent's PATH names these directories. The first holds a
	// hello that cannot be executed, which the search passes over as
	// execvp(3) does; the second the one that runs.
	refused := filepath.Dir(writeFile(t, "hello", "#!/bin/sh\necho wrong\n", 0o644))
	good := filepath.Dir(writeFile(t, "hello", "#!/bin/sh\necho \"hello $GREETING\"\n", 0o755))
	a := startAgent(t, envReply(set("PATH", refused+":"+good+":/usr/bin:/bin"), set("GREETING", "world")))
	r := launch(t, nil, []string{"PATH=/usr/bin:/bin", "ENVLET_SOCKET=" + a.sock}, "hello")
	if r.code != 0 || r.stdout != "hello world\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestExitCodes(t *testing.T) {
	t.Parallel()
	notExec := writeFile(t, "notexec", "#!/bin/sh\nexit 0\n", 0o644)
	badFormat := writeFile(t, "badformat", "\x00\x01\x02\x03not a program", 0o755)
	dir := t.TempDir()
	goodEnv := wire.AppendEnv(nil, 1, []wire.Entry{set("SECRETISH", canaryValue), set("PATH", "/usr/bin:/bin")})

	for _, tt := range []struct {
		name     string
		reply    func(wire.Request) []byte // nil: no agent at all
		extraEnv []string
		args     []string
		code     int
		stderr   []string // substrings stderr must hold
	}{
		{name: "NoSocket", args: []string{"/usr/bin/true"}, code: 125,
			stderr: []string{"envlet-exec: AGENT_UNREACHABLE: connect ", "no such file or directory"}},
		{name: "ErrorFrame", args: []string{"/usr/bin/true"}, code: 125,
			reply: func(wire.Request) []byte {
				return wire.AppendError(nil, "WORKLOAD_UNKNOWN", "no registration matches uid 0")
			},
			stderr: []string{"envlet-exec: WORKLOAD_UNKNOWN: ", "no registration matches uid 0"}},
		{name: "BadMagic", args: []string{"/usr/bin/true"}, code: 125,
			reply:  func(wire.Request) []byte { return []byte("HTTP/1.1 400 Bad Request\r\n\r\n" + canaryValue) },
			stderr: []string{"envlet-exec: BAD_REPLY: ", "bad magic"}},
		{name: "ClosedWithoutReply", args: []string{"/usr/bin/true"}, code: 125,
			reply:  func(wire.Request) []byte { return nil },
			stderr: []string{"envlet-exec: BAD_REPLY: agent closed the connection"}},
		{name: "TruncatedReply", args: []string{"/usr/bin/true"}, code: 125,
			reply:  func(wire.Request) []byte { return goodEnv[:len(goodEnv)-3] },
			stderr: []string{"envlet-exec: BAD_REPLY: ", "unexpected EOF"}},
		{name: "WrongReplyType", args: []string{"/usr/bin/true"}, code: 125,
			reply:  func(wire.Request) []byte { return wire.AppendChanged(nil, 3) },
			stderr: []string{"envlet-exec: BAD_REPLY: want an Env frame, got Changed"}},
		{name: "MalformedEnv", args: []string{"/usr/bin/true"}, code: 125,
			reply: func(wire.Request) []byte {
				// A NUL in a value: the decoder refuses it, naming the entry only.
				return wire.AppendEnv(nil, 1, []wire.Entry{set("SECRETISH", canaryValue+"\x00")})
			},
			stderr: []string{"envlet-exec: BAD_REPLY: decode Env: entry 0 value: invalid"}},
		{name: "Timeout", args: []string{"/usr/bin/true"}, code: 125, extraEnv: []string{"ENVLET_TIMEOUT=0.3"},
			reply:  silent,
			stderr: []string{"envlet-exec: AGENT_UNREACHABLE: receive reply from ", "timed out after 300ms"}},
		{name: "NotExecutable", args: []string{notExec}, code: 126,
			reply:  func(wire.Request) []byte { return goodEnv },
			stderr: []string{"envlet-exec: NOT_EXECUTABLE: " + notExec + ": permission denied"}},
		{name: "Directory", args: []string{dir}, code: 126,
			reply:  func(wire.Request) []byte { return goodEnv },
			stderr: []string{"envlet-exec: NOT_EXECUTABLE: "}},
		{name: "ExecFormat", args: []string{badFormat}, code: 126,
			reply:  func(wire.Request) []byte { return goodEnv },
			stderr: []string{"envlet-exec: NOT_EXECUTABLE: " + badFormat + ": exec format error"}},
		{name: "NotFoundOnPath", args: []string{"envlet-no-such-program"}, code: 127,
			reply:  func(wire.Request) []byte { return goodEnv },
			stderr: []string{"envlet-exec: NOT_FOUND: envlet-no-such-program: not found on PATH"}},
		{name: "NotFoundByPath", args: []string{"/nonexistent/prog"}, code: 127,
			reply:  func(wire.Request) []byte { return goodEnv },
			stderr: []string{"envlet-exec: NOT_FOUND: /nonexistent/prog: no such file or directory"}},
		{name: "NotExecutableOnPath", args: []string{"notexec"}, code: 126,
			reply: func(wire.Request) []byte {
				return wire.AppendEnv(nil, 1, []wire.Entry{set("PATH", filepath.Dir(notExec)), set("X", canaryValue)})
			},
			stderr: []string{"envlet-exec: NOT_EXECUTABLE: notexec: permission denied"}},
		{name: "DefaultPathWhenUnset", args: []string{"sh", "-c", "exit 3"}, code: 3,
			reply: func(wire.Request) []byte { return wire.AppendEnv(nil, 1, []wire.Entry{unset("PATH")}) }},
		{name: "EmptyProgram", args: []string{"--", ""}, code: 127,
			reply:  func(wire.Request) []byte { return goodEnv },
			stderr: []string{"envlet-exec: NOT_FOUND: empty PROGRAM name"}},
		{name: "ProgramStatus", args: []string{"sh", "-c", "exit 7"}, code: 7,
			reply: func(wire.Request) []byte { return goodEnv }},
		{name: "NoProgram", code: 125, reply: func(wire.Request) []byte { return goodEnv },
			stderr: []string{"envlet-exec: USAGE: missing PROGRAM"}},
		{name: "OnChangeWithoutWatch", args: []string{"--on-change=restart", "/usr/bin/true"}, code: 125,
			reply:  func(wire.Request) []byte { return goodEnv },
			stderr: []string{"envlet-exec: USAGE: --on-change and --grace need --watch"}},
		{name: "UnknownFlag", args: []string{"--bogus", "/usr/bin/true"}, code: 125,
			reply:  func(wire.Request) []byte { return goodEnv },
			stderr: []string{"envlet-exec: USAGE: unknown flag --bogus"}},
		{name: "BadTimeout", args: []string{"/usr/bin/true"}, code: 125, extraEnv: []string{"ENVLET_TIMEOUT=soon"},
			reply:  func(wire.Request) []byte { return goodEnv },
			stderr: []string{"envlet-exec: USAGE: ENVLET_TIMEOUT must be a number of seconds"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sock := filepath.Join(dir, "none.sock")
			if tt.reply != nil {
				sock = startAgent(t, tt.reply).sock
			}
			token := writeFile(t, "token", canaryToken+"\n", 0o600)
			env := append([]string{"PATH=/usr/bin:/bin", "ENVLET_SOCKET=" + sock, "ENVLET_TOKEN_FILE=" + token}, tt.extraEnv...)
			r := launch(t, nil, env, tt.args...)
			if r.code != tt.code {
				t.Fatalf("exit %d, want %d; stderr %q", r.code, tt.code, r.stderr)
			}
			for _, s := range tt.stderr {
				if !strings.Contains(r.stderr, s) {
					t.Errorf("stderr %q does not hold %q", r.stderr, s)
				}
			}
			if tt.code >= 125 && strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("stderr %q is not one line", r.stderr)
			}
			for _, c := range []string{canaryValue, canaryToken} {
				if strings.Contains(r.stderr, c) || strings.Contains(r.stdout, c) {
					t.Errorf("output holds a value: stdout %q, stderr %q", r.stdout, r.stderr)
				}
			}
		})
	}
}

// An agent may refuse a peer from its credentials alone, writing an Error
// frame and closing before it reads the request; the launcher's write then
// fails, but the agent's reason must still reach the user.
func TestRefusedBeforeRequest(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "el")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "w.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	wg.Go(func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			c.Write(wire.AppendError(nil, "WORKLOAD_AMBIGUOUS", "2 workloads match uid 0"))
			c.Close()
		}
	})
	for range 5 { // the write races the close: either order must work
		r := launch(t, nil, []string{"ENVLET_SOCKET=" + sock}, "/usr/bin/true")
		if r.code != 125 || !strings.HasPrefix(r.stderr, "envlet-exec: WORKLOAD_AMBIGUOUS: ") {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
	}
}

func TestToken(t *testing.T) {
	t.Parallel()
	a := startAgent(t, envReply())
	token := writeFile(t, "token", "tok-123 \t\r\n\n", 0o600)
	other := writeFile(t, "other", "other-token", 0o600)
	empty := writeFile(t, "empty", "", 0o600)
	for _, tt := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"None", nil, nil, ""},
		{"Flag", nil, []string{"--token-file", token}, "tok-123"},
		{"FlagEquals", nil, []string{"--token-file=" + token}, "tok-123"},
		{"SingleDash", nil, []string{"-token-file", token}, "tok-123"},
		{"Env", []string{"ENVLET_TOKEN_FILE=" + token}, nil, "tok-123"},
		{"FlagBeatsEnv", []string{"ENVLET_TOKEN_FILE=" + token}, []string{"--token-file", other}, "other-token"},
		{"EmptyFile", nil, []string{"--token-file", empty}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(a.requests())
			env := append([]string{"PATH=/usr/bin:/bin", "ENVLET_SOCKET=" + a.sock}, tt.env...)
			r := launch(t, nil, env, append(tt.args, "/usr/bin/true")...)
			if r.code != 0 {
				t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
			}
			reqs := a.requests()[before:]
			if len(reqs) != 1 || reqs[0].err != nil || reqs[0].req.Type != wire.TypeGetEnv {
				t.Fatalf("agent saw %+v, want one GetEnv", reqs)
			}
			if got := string(reqs[0].req.Token); got != tt.want {
				t.Fatalf("agent got token %q, want %q", got, tt.want)
			}
		})
	}

	t.Run("MissingFile", func(t *testing.T) {
		r := launch(t, nil, []string{"ENVLET_SOCKET=" + a.sock}, "--token-file", "/nonexistent/token", "/usr/bin/true")
		if r.code != 125 || !strings.Contains(r.stderr, "envlet-exec: TOKEN_FILE: read token file /nonexistent/token: no such file") {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
	})
	t.Run("TooLong", func(t *testing.T) {
		long := writeFile(t, "long", canaryToken+strings.Repeat("x", wire.MaxToken), 0o600)
		r := launch(t, nil, []string{"ENVLET_SOCKET=" + a.sock}, "--token-file", long, "/usr/bin/true")
		if r.code != 125 || !strings.Contains(r.stderr, "TOKEN_FILE") || strings.Contains(r.stderr, canaryToken) {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
	})
}

func TestSocketFlagBeatsEnv(t *testing.T) {
	t.Parallel()
	a := startAgent(t, envReply(set("FROM_AGENT", "yes")))
	r := launch(t, nil, []string{"PATH=/usr/bin:/bin", "ENVLET_SOCKET=/nonexistent/w.sock"},
		"--socket", a.sock, "--", "sh", "-c", "printf %s \"$FROM_AGENT\"")
	if r.code != 0 || r.stdout != "yes" {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestGetSecret(t *testing.T) {
	t.Parallel()
	secret := make([]byte, 0, 512)
	for i := range 512 {
		secret = append(secret, byte(i))
	}
	a := startAgent(t, func(req wire.Request) []byte {
		if req.Type != wire.TypeGetSecret {
			return wire.AppendError(nil, "BAD_REQUEST", "want GetSecret")
		}
		if req.Name != "TLS_KEY" {
			return wire.AppendError(nil, "SECRET_NOT_FOUND", "no secret "+req.Name)
		}
		return wire.AppendSecret(nil, secret)
	})
	token := writeFile(t, "token", "tok\n", 0o600)
	env := []string{"ENVLET_SOCKET=" + a.sock}

	r := launch(t, nil, env, "--token-file", token, "--get-secret", "TLS_KEY")
	if r.code != 0 || r.stdout != string(secret) || r.stderr != "" {
		t.Fatalf("exit %d, %d bytes on stdout, stderr %q; want 0 and the %d secret bytes", r.code, len(r.stdout), r.stderr, len(secret))
	}
	reqs := a.requests()
	if len(reqs) != 1 || reqs[0].req.Name != "TLS_KEY" || string(reqs[0].req.Token) != "tok" {
		t.Fatalf("agent saw %+v", reqs)
	}

	r = launch(t, nil, env, "--get-secret=OTHER")
	if r.code != 125 || r.stdout != "" || !strings.Contains(r.stderr, "envlet-exec: SECRET_NOT_FOUND: ") {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	for _, args := range [][]string{
		{"--get-secret", "A", "--", "/usr/bin/true"},
		{"--get-secret", "A=B"},
		{"--get-secret"},
		{"--get-secret="},
	} {
		if r := launch(t, nil, env, args...); r.code != 125 || !strings.Contains(r.stderr, "envlet-exec: USAGE: ") {
			t.Errorf("%q: exit %d, stderr %q; want a usage error", args, r.code, r.stderr)
		}
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	r := launch(t, nil, nil, "--help")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "usage: envlet-exec ") || r.stderr != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// An unprivileged caller can reach the socket and run its program; the
// agent sees its uid.
func TestUnprivilegedCaller(t *testing.T) {
	t.Parallel()
	if os.Getuid() != 0 {
		t.Skip("needs root to start a process as another uid")
	}
	const nobody = 65534
	a := startAgent(t, envReply(set("WHO", "nobody")))
	r := launch(t, &syscall.Credential{Uid: nobody, Gid: nobody},
		[]string{"PATH=/usr/bin:/bin", "ENVLET_SOCKET=" + a.sock},
		"sh", "-c", "echo \"$(id -u) $WHO\"")
	if r.code != 0 || r.stdout != "65534 nobody\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if reqs := a.requests(); len(reqs) != 1 || reqs[0].uid != nobody {
		t.Fatalf("agent saw %+v, want one request from uid %d", reqs, nobody)
	}
}

func TestMerge(t *testing.T) {
	for _, tt := range []struct {
		name    string
		environ []string
		entries []wire.Entry
		want    []string
	}{
		{"Nothing", nil, nil, []string{}},
		{"StripsEnvlet", []string{"ENVLET_SOCKET=s", "A=1", "ENVLET_=x", "ENVLET_TOKEN_FILE=t"}, nil, []string{"A=1"}},
		{"AgentMaySetEnvletNames", []string{"ENVLET_SOCKET=s"}, []wire.Entry{set("ENVLET_SOCKET", "/x")}, []string{"ENVLET_SOCKET=/x"}},
		{"KeepsPlaceAppendsNew", []string{"A=1", "B=2"}, []wire.Entry{set("C", "3"), set("A", "9")}, []string{"A=9", "B=2", "C=3"}},
		{"UnsetThenSet", []string{"A=1", "B=2"}, []wire.Entry{unset("A"), set("A", "3")}, []string{"B=2", "A=3"}},
		{"DuplicatesCollapseOnSet", []string{"A=1", "B=2", "A=3"}, []wire.Entry{set("A", "4")}, []string{"A=4", "B=2"}},
		{"DuplicatesGoOnUnset", []string{"A=1", "B=2", "A=3"}, []wire.Entry{unset("A")}, []string{"B=2"}},
		{"UntouchedDuplicatesStay", []string{"A=1", "A=2"}, []wire.Entry{set("B", "3")}, []string{"A=1", "A=2", "B=3"}},
		{"NoEqualsKept", []string{"WEIRD", "A=1"}, []wire.Entry{set("WEIRD", "x")}, []string{"WEIRD", "A=1", "WEIRD=x"}},
		{"EmptyValue", []string{"A=1"}, []wire.Entry{set("A", "")}, []string{"A="}},
		{"PrefixNotName", []string{"AB=1"}, []wire.Entry{unset("A")}, []string{"AB=1"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := merge(tt.environ, tt.entries); !slices.Equal(got, tt.want) {
				t.Fatalf("merge = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseArgs(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want options
		bad  string // substring of the usage error, when one is expected
	}{
		{name: "Program", args: []string{"prog", "--socket", "x"}, want: options{argv: []string{"prog", "--socket", "x"}}},
		{name: "DashDash", args: []string{"--", "-prog"}, want: options{argv: []string{"-prog"}}},
		{name: "Flags", args: []string{"--socket=/s", "-token-file", "/t", "--", "p"},
			want: options{socket: "/s", tokenFile: "/t", argv: []string{"p"}}},
		{name: "Secret", args: []string{"--get-secret", "N"}, want: options{secret: "N", getSecret: true}},
		{name: "Help", args: []string{"-h"}, want: options{help: true}},
		{name: "HelpWins", args: []string{"--help", "--get-secret", "N", "p"}, want: options{help: true, secret: "N", getSecret: true, argv: []string{"p"}}},
		{name: "MissingValue", args: []string{"--socket"}, bad: "--socket needs a value"},
		{name: "EmptyValue", args: []string{"--socket=", "p"}, bad: "--socket needs a non-empty value"},
		{name: "HelpValue", args: []string{"--help=yes"}, bad: "--help takes no value"},
		{name: "NoProgram", args: []string{"--socket", "/s"}, bad: "missing PROGRAM"},
		{name: "SecretAndProgram", args: []string{"--get-secret", "N", "p"}, bad: "--get-secret takes no PROGRAM"},
		{name: "Unknown", args: []string{"--nope", "p"}, bad: "unknown flag --nope"},
		{name: "UnknownWithValue", args: []string{"-token=" + canaryToken, "p"}, bad: "unknown flag --token ("},
		{name: "Watch", args: []string{"--watch", "--on-change", "signal:hup", "--grace=1.5", "p"},
			want: options{watch: true, onChange: onChange{action: signalOnChange, sig: unix.SIGHUP}, grace: 1500 * time.Millisecond, argv: []string{"p"}}},
		{name: "WatchDefaults", args: []string{"--watch", "p"},
			want: options{watch: true, onChange: onChange{action: restart}, grace: defaultGrace, argv: []string{"p"}}},
		{name: "WatchExit", args: []string{"-watch", "-on-change=exit", "-grace", "1m30s", "p"},
			want: options{watch: true, onChange: onChange{action: exitOnChange}, grace: 90 * time.Second, argv: []string{"p"}}},
		{name: "WatchSigPrefix", args: []string{"--watch", "--on-change=signal:SIGUSR2", "p"},
			want: options{watch: true, onChange: onChange{action: signalOnChange, sig: unix.SIGUSR2}, grace: defaultGrace, argv: []string{"p"}}},
		{name: "WatchValue", args: []string{"--watch=yes", "p"}, bad: "--watch takes no value"},
		{name: "OnChangeBad", args: []string{"--watch", "--on-change", "reload", "p"}, bad: "--on-change must be restart, exit or signal:NAME"},
		{name: "OnChangeBadSignal", args: []string{"--watch", "--on-change", "signal:NOPE", "p"}, bad: "--on-change must be"},
		{name: "OnChangeEmptySignal", args: []string{"--watch", "--on-change", "signal:", "p"}, bad: "--on-change must be"},
		{name: "GraceBad", args: []string{"--watch", "--grace", "soon", "p"}, bad: "--grace must be a duration"},
		{name: "GraceNegative", args: []string{"--watch", "--grace=-1s", "p"}, bad: "--grace must be a duration"},
		{name: "GraceWithoutWatch", args: []string{"--grace=1s", "p"}, bad: "--on-change and --grace need --watch"},
		{name: "WatchAndSecret", args: []string{"--watch", "--get-secret", "N"}, bad: "--get-secret and --watch do not go together"},
		{name: "WatchNoProgram", args: []string{"--watch"}, bad: "missing PROGRAM"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, f := parseArgs(tt.args)
			if tt.bad != "" {
				if f == nil || f.code != "USAGE" || f.exit != 125 || !strings.Contains(f.msg, tt.bad) {
					t.Fatalf("failure = %+v, want USAGE holding %q", f, tt.bad)
				}
				return
			}
			if f != nil {
				t.Fatalf("failure %+v", f)
			}
			if tt.want.onChange.action == 0 { // a case that does not care
				tt.want.onChange, tt.want.grace = onChange{action: restart}, defaultGrace
			}
			if got.socket != tt.want.socket || got.tokenFile != tt.want.tokenFile || got.secret != tt.want.secret ||
				got.getSecret != tt.want.getSecret || got.help != tt.want.help || !slices.Equal(got.argv, tt.want.argv) ||
				got.watch != tt.want.watch || got.onChange != tt.want.onChange || got.grace != tt.want.grace {
				t.Fatalf("parseArgs = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseTimeout(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", defaultTimeout, true},
		{"0", 0, true},
		{"5", 5 * time.Second, true},
		{"0.25", 250 * time.Millisecond, true},
		{"1.", time.Second, true},
		{".5", 500 * time.Millisecond, true},
		{"2.0000000019", 2*time.Second + 1, true},
		{".", 0, false},
		{"-1", 0, false},
		{"1s", 0, false},
		{"1.2.3", 0, false},
		{"99999999999999999999", 0, false},
	} {
		got, f := parseTimeout(tt.in)
		if (f == nil) != tt.ok || got != tt.want {
			t.Errorf("parseTimeout(%q) = %v, %+v; want %v, ok %v", tt.in, got, f, tt.want, tt.ok)
		}
	}
}
