package launcher

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/envlet/envlet/agent/wire"
	"golang.org/x/sys/unix"
)

// These tests run the real envlet-exec --watch against watchAgent, an agent
// of the test's own that speaks the wire protocol on a real socket, and a
// supervised program that is this test binary again (child, below): it
// writes what happens to it, one line each, on stdout, which the test reads
// from a pipe. Every wait is for a line, a process exit or a pidfd; a guard
// limit only turns a hang into a failure.

const guard = 20 * time.Second

// watchAgent serves GetEnv and Watch from one environment that the test
// changes; a change sends Changed to every open Watch connection.
type watchAgent struct {
	sock string

	mu       sync.Mutex
	rev      uint64
	entries  []wire.Entry
	watchers map[*net.UnixConn]bool
	watches  int               // Watch requests served
	getEnvs  int               // GetEnv requests served
	refuse   []byte            // when set, the reply to every request
	served   chan wire.Request // every request served, when the test listens
}

func startWatchAgent(t testing.TB, entries ...wire.Entry) *watchAgent {
	t.Helper()
	dir, err := os.MkdirTemp("", "el")
	if err != nil {
		t.Fatal(err)
	}
	a := &watchAgent{sock: filepath.Join(dir, "w.sock"), rev: 1, entries: entries,
		watchers: map[*net.UnixConn]bool{}, served: make(chan wire.Request, 1024)}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: a.sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			wg.Go(func() { a.handle(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		a.mu.Lock()
		for c := range a.watchers {
			c.Close()
		}
		a.mu.Unlock()
		wg.Wait()
		os.RemoveAll(dir)
	})
	return a
}

func (a *watchAgent) handle(c *net.UnixConn) {
	defer c.Close()
	typ, p, err := wire.ReadFrame(c, nil)
	if err != nil {
		return
	}
	req, err := wire.DecodeRequest(typ, p)
	if err != nil {
		return
	}
	a.mu.Lock()
	if a.refuse != nil {
		c.Write(a.refuse)
		a.mu.Unlock()
		return
	}
	// Under the lock: a change lands either in this Env or in a Changed
	// on this connection, never in neither.
	c.Write(wire.AppendEnv(nil, a.rev, a.entries))
	if req.Type == wire.TypeWatch {
		a.watches++
		a.watchers[c] = true
	} else {
		a.getEnvs++
	}
	a.served <- req
	a.mu.Unlock()
	if req.Type != wire.TypeWatch {
		return
	}
	io.Copy(io.Discard, c) // until the launcher hangs up or the test drops it
	a.mu.Lock()
	delete(a.watchers, c)
	a.mu.Unlock()
}

// set changes the environment and tells every watcher.
func (a *watchAgent) set(entries ...wire.Entry) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.rev++
	a.entries = entries
	for c := range a.watchers {
		c.Write(wire.AppendChanged(nil, a.rev))
	}
}

// poke sends Changed with no change to the environment, as for a revision
// that changed something this workload does not see.
func (a *watchAgent) poke() { a.mu.Lock(); e := a.entries; a.mu.Unlock(); a.set(e...) }

// dropAndSet closes every Watch connection and changes the environment in
// one step, so the launcher hears of the change only from the Env its next
// connection opens with.
func (a *watchAgent) dropAndSet(entries ...wire.Entry) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for c := range a.watchers {
		c.Close()
		delete(a.watchers, c)
	}
	a.rev++
	a.entries = entries
}

// awaitRequest waits for the next request of type typ the agent serves.
func (a *watchAgent) awaitRequest(t *testing.T, typ wire.Type) {
	t.Helper()
	limit := time.After(guard)
	for {
		select {
		case req := <-a.served:
			if req.Type == typ {
				return
			}
		case <-limit:
			t.Fatalf("the agent served no %v", typ)
		}
	}
}

// supervised is a running envlet-exec --watch.
type supervised struct {
	cmd    *exec.Cmd
	lines  chan string // the program's stdout, line by line
	done   chan struct{}
	code   int
	mu     sync.Mutex
	stderr bytes.Buffer
}

func (p *supervised) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.Write(b)
}

func (p *supervised) errText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// superviseChild starts envlet-exec with args, then this test binary as
// the program in the given child mode, with the agent at a.
func superviseChild(t testing.TB, a *watchAgent, sys *syscall.SysProcAttr, mode string, env []string, args ...string) *supervised {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args = append(append(args, "--"), self)
	env = append([]string{"PATH=/usr/bin:/bin", "ENVLET_SOCKET=" + a.sock, "ELTEST_CHILD=" + mode}, env...)
	return startSupervised(t, sys, env, args...)
}

func startSupervised(t testing.TB, sys *syscall.SysProcAttr, env []string, args ...string) *supervised {
	t.Helper()
	return startSupervisedStdin(t, sys, nil, env, args...)
}

func startSupervisedStdin(t testing.TB, sys *syscall.SysProcAttr, stdin *os.File, env []string, args ...string) *supervised {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &supervised{cmd: exec.Command(bin, args...), lines: make(chan string, 100), done: make(chan struct{})}
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = w, p
	if stdin != nil {
		p.cmd.Stdin = stdin
	}
	p.cmd.SysProcAttr = sys
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
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			p.code = ee.ExitCode()
			if ws := ee.Sys().(syscall.WaitStatus); ws.Signaled() {
				p.code = 128 + int(ws.Signal())
			}
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		// SIGTERM reaches the program through the launcher; SIGKILL would
		// leave it running.
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(guard):
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("envlet-exec stderr:\n%s", p.errText())
		}
	})
	return p
}

// expect reads the program's next line and fails unless it starts with
// prefix; it returns the rest of the line.
func (p *supervised) expect(t testing.TB, prefix string) string {
	t.Helper()
	select {
	case line, ok := <-p.lines:
		if !ok {
			t.Fatalf("the program's output ended; want a line %q", prefix)
		}
		if !strings.HasPrefix(line, prefix) {
			t.Fatalf("the program wrote %q; want a line %q", line, prefix)
		}
		return strings.TrimSpace(line[len(prefix):])
	case <-time.After(guard):
		t.Fatalf("no line %q from the program", prefix)
	}
	return ""
}

// wait waits for envlet-exec to exit and returns its status.
func (p *supervised) wait(t testing.TB) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(guard):
		t.Fatal("envlet-exec did not exit")
	}
	return 0
}

func (p *supervised) signal(sig syscall.Signal) { p.cmd.Process.Signal(sig) }

// start reads a "start PID VALUE" line and returns PID and VALUE.
func (p *supervised) start(t testing.TB) (int, string) {
	t.Helper()
	pid, value, _ := strings.Cut(p.expect(t, "start "), " ")
	n, err := strconv.Atoi(pid)
	if err != nil {
		t.Fatalf("bad start line: pid %q", pid)
	}
	return n, value
}

// childSignals are the signals the test program records.
var childSignals = []os.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGALRM, syscall.SIGCONT}

// child is the supervised program (ELTEST_CHILD=mode). It writes one line
// per event on stdout: "start PID $V" when it starts, then the name of each
// signal it gets. SIGTERM ends it with status $ELTEST_TERM_EXIT (default
// 0) unless $ELTEST_IGNORE_TERM is set.
func child(mode string) int {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, childSignals...)
	say := func(s string) { os.Stdout.WriteString(s + "\n") }
	if mode != "grandchild" && mode != "intermediate" {
		// Die with the launcher, so that a failed test leaves nothing
		// behind.
		unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0)
	}
	switch mode {
	case "record":
	case "tty":
		// Whether we hold the terminal on stdin: its foreground group is ours.
		fg, err := unix.IoctlGetInt(0, unix.TIOCGPGRP)
		say("foreground " + strconv.FormatBool(err == nil && fg == unix.Getpgrp()))
	case "orphan":
		if code := orphan(say); code != 0 {
			return code
		}
	case "intermediate":
		// Start the grandchild and leave it an orphan.
		gc := exec.Command(os.Args[0])
		gc.Env = append(os.Environ(), "ELTEST_CHILD=grandchild")
		gc.Stdout, gc.ExtraFiles = os.Stdout, []*os.File{os.NewFile(3, "release")}
		if err := gc.Start(); err != nil {
			return 1
		}
		return 0
	case "grandchild":
		// Say which process we are (our pid as the test sees it: /proc
		// is the test's), then live until fd 3 ends.
		self, _ := os.Readlink("/proc/self")
		say(self)
		os.Stdout.Close()
		io.Copy(io.Discard, os.NewFile(3, "release"))
		return 0
	case "group":
		// A process in our group that ignores SIGTERM and runs until
		// killed: a restart must not leave it behind.
		gc := exec.Command("/bin/sh", "-c", `trap "" TERM; exec sleep 1000000`)
		if err := gc.Start(); err != nil {
			return 1
		}
		say("group " + strconv.Itoa(gc.Process.Pid))
	default:
		say("unknown mode " + mode)
		return 2
	}
	say("start " + strconv.Itoa(os.Getpid()) + " " + os.Getenv("V"))
	for sig := range sigs {
		name := signalName(sig.(syscall.Signal))
		say(strings.TrimPrefix(name, "SIG"))
		if sig == syscall.SIGTERM && os.Getenv("ELTEST_IGNORE_TERM") == "" {
			code, _ := strconv.Atoi(os.Getenv("ELTEST_TERM_EXIT"))
			return code
		}
		if sig == syscall.SIGUSR1 && mode == "orphan" {
			orphanRelease.Close()
		}
	}
	return 0
}

// orphanRelease is the write end of the pipe whose end releases the
// orphaned grandchild.
var orphanRelease *os.File

// orphan makes an orphan in the PID namespace whose PID 1 is the launcher:
// it starts an intermediate process that starts the grandchild and exits
// at once. It says "orphan PID" (the grandchild's pid as the test sees it)
// once the intermediate is gone; SIGUSR1 then ends the grandchild.
func orphan(say func(string)) int {
	release, keep, err := os.Pipe()
	if err != nil {
		return 1
	}
	pidR, pidW, err := os.Pipe()
	if err != nil {
		return 1
	}
	mid := exec.Command(os.Args[0])
	mid.Env = append(os.Environ(), "ELTEST_CHILD=intermediate")
	mid.Stdout, mid.ExtraFiles = pidW, []*os.File{release}
	if err := mid.Run(); err != nil {
		say("intermediate: " + err.Error())
		return 1
	}
	pidW.Close()
	release.Close()
	pid, err := io.ReadAll(pidR)
	if err != nil || len(pid) == 0 {
		say("no grandchild pid")
		return 1
	}
	orphanRelease = keep
	say("orphan " + strings.TrimSpace(string(pid)))
	return 0
}

func TestWatchExitStatus(t *testing.T) {
	t.Parallel()
	notExec := writeFile(t, "notexec", "#!/bin/sh\n", 0o644)
	for _, tt := range []struct {
		name   string
		argv   []string
		refuse []byte
		code   int
		stderr string
	}{
		{name: "Code", argv: []string{"sh", "-c", "exit 42"}, code: 42},
		{name: "Zero", argv: []string{"true"}, code: 0},
		{name: "Signal", argv: []string{"sh", "-c", "kill -USR1 $$"}, code: 128 + 10},
		{name: "Kill", argv: []string{"sh", "-c", "kill -KILL $$"}, code: 128 + 9},
		{name: "NotFound", argv: []string{"envlet-no-such-program"}, code: 127, stderr: "envlet-exec: NOT_FOUND: "},
		{name: "NotExecutable", argv: []string{notExec}, code: 126, stderr: "envlet-exec: NOT_EXECUTABLE: "},
		{name: "Refused", argv: []string{"true"}, code: 125, stderr: "envlet-exec: WORKLOAD_UNKNOWN: ",
			refuse: wire.AppendError(nil, "WORKLOAD_UNKNOWN", "no registration matches")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := startWatchAgent(t, set("SECRETISH", canaryValue))
			a.mu.Lock()
			a.refuse = tt.refuse
			a.mu.Unlock()
			p := startSupervised(t, nil, []string{"PATH=/usr/bin:/bin", "ENVLET_SOCKET=" + a.sock},
				append([]string{"--watch", "--"}, tt.argv...)...)
			if code := p.wait(t); code != tt.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tt.code, p.errText())
			}
			if got := p.errText(); !strings.Contains(got, tt.stderr) || strings.Contains(got, canaryValue) {
				t.Fatalf("stderr %q, want it to hold %q and no value", got, tt.stderr)
			}
		})
	}
}

// Every signal a supervisor should pass on reaches the program, and the
// program's status on SIGTERM is the launcher's.
func TestWatchForwardsSignals(t *testing.T) {
	t.Parallel()
	a := startWatchAgent(t, set("V", "one"))
	p := superviseChild(t, a, nil, "record", []string{"ELTEST_TERM_EXIT=7"}, "--watch")
	if _, v := p.start(t); v != "one" {
		t.Fatalf("the program started with V=%q, want one", v)
	}
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGUSR1,
		syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGALRM, syscall.SIGCONT} {
		p.signal(sig)
		p.expect(t, strings.TrimPrefix(signalName(sig), "SIG"))
	}
	p.signal(syscall.SIGTERM)
	p.expect(t, "TERM")
	if code := p.wait(t); code != 7 {
		t.Fatalf("exit %d, want the program's 7", code)
	}
}

func TestWatchRestart(t *testing.T) {
	t.Parallel()
	a := startWatchAgent(t, set("V", "one"), set("PATH", "/usr/bin:/bin"))
	p := superviseChild(t, a, nil, "record", nil, "--watch")
	pid1, v := p.start(t)
	if v != "one" {
		t.Fatalf("started with V=%q", v)
	}
	a.set(set("V", "two"), set("PATH", "/usr/bin:/bin"))
	p.expect(t, "TERM")
	pid2, v := p.start(t)
	if v != "two" || pid2 == pid1 {
		t.Fatalf("after the change: pid %d (was %d), V=%q; want a new process with two", pid2, pid1, v)
	}
	// A change that leaves this program's environment as it is does not
	// restart it: the next line is the next real change's.
	a.poke()
	a.awaitRequest(t, wire.TypeGetEnv)
	a.awaitRequest(t, wire.TypeGetEnv)
	a.set(set("V", "three"), set("PATH", "/usr/bin:/bin"))
	p.expect(t, "TERM")
	if _, v := p.start(t); v != "three" {
		t.Fatalf("V=%q, want three", v)
	}
	p.signal(syscall.SIGTERM)
	p.expect(t, "TERM")
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if got := p.errText(); !strings.Contains(got, "envlet-exec: CHANGED: revision 2: restarting ") ||
		strings.Count(got, "CHANGED") != 2 {
		t.Fatalf("stderr %q; want one CHANGED note per restart", got)
	}
}

func TestWatchSignalOnChange(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ flag, line string }{
		{"signal:HUP", "HUP"},
		{"signal:sigusr2", "USR2"},
	} {
		t.Run(tt.line, func(t *testing.T) {
			t.Parallel()
			a := startWatchAgent(t, set("V", "one"))
			p := superviseChild(t, a, nil, "record", nil, "--watch", "--on-change", tt.flag)
			p.start(t)
			a.set(set("V", "two"))
			p.expect(t, tt.line)
			a.set(set("V", "three"))
			p.expect(t, tt.line) // not a restart: no TERM, no start
			p.signal(syscall.SIGTERM)
			p.expect(t, "TERM")
			if code := p.wait(t); code != 0 {
				t.Fatalf("exit %d", code)
			}
		})
	}
}

func TestWatchExitOnChange(t *testing.T) {
	t.Parallel()
	a := startWatchAgent(t, set("V", "one"))
	p := superviseChild(t, a, nil, "record", []string{"ELTEST_TERM_EXIT=3"}, "--watch", "--on-change=exit")
	p.start(t)
	a.set(set("V", "two"))
	p.expect(t, "TERM")
	if code := p.wait(t); code != 3 {
		t.Fatalf("exit %d, want the program's 3", code)
	}
}

// A program that ignores SIGTERM gets SIGKILL once the grace period is
// over, and then is restarted (or the launcher exits with 137).
func TestWatchGrace(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		onChange string
		restarts bool
	}{{"restart", true}, {"exit", false}} {
		t.Run(tt.onChange, func(t *testing.T) {
			t.Parallel()
			a := startWatchAgent(t, set("V", "one"))
			p := superviseChild(t, a, nil, "record", []string{"ELTEST_IGNORE_TERM=1"},
				"--watch", "--grace", "200ms", "--on-change", tt.onChange)
			p.start(t)
			a.set(set("V", "two"))
			p.expect(t, "TERM")
			if tt.restarts {
				pid, v := p.start(t)
				if v != "two" {
					t.Fatalf("V=%q", v)
				}
				syscall.Kill(pid, syscall.SIGKILL)
			}
			if code := p.wait(t); code != 128+9 {
				t.Fatalf("exit %d, want 137", code)
			}
			if !strings.Contains(p.errText(), "envlet-exec: KILLED: ") {
				t.Fatalf("stderr %q lacks the KILLED note", p.errText())
			}
		})
	}
}

// A restart ends the whole old generation: a process the program started,
// which ignores SIGTERM, is killed too.
func TestWatchRestartEndsProcessGroup(t *testing.T) {
	t.Parallel()
	a := startWatchAgent(t, set("V", "one"))
	p := superviseChild(t, a, nil, "group", nil, "--watch", "--grace", "300ms")
	gc, err := strconv.Atoi(p.expect(t, "group "))
	if err != nil {
		t.Fatal(err)
	}
	pidfd, err := unix.PidfdOpen(gc, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	p.start(t)
	a.set(set("V", "two"))
	p.expect(t, "TERM")
	gc2, _ := strconv.Atoi(p.expect(t, "group "))
	defer syscall.Kill(gc2, syscall.SIGKILL) // the new generation's, left when the program exits
	if _, v := p.start(t); v != "two" {
		t.Fatalf("V=%q", v)
	}
	// The old generation's process is gone (it would have slept for 11
	// days).
	if !exited(pidfd) {
		t.Fatalf("the old generation's process %d still runs after the restart", gc)
	}
	p.signal(syscall.SIGTERM)
	p.expect(t, "TERM")
	p.wait(t)
}

// When the Watch connection breaks, the program runs on; the launcher
// reconnects, and a change made meanwhile takes effect from the Env the new
// connection opens with.
func TestWatchReconnect(t *testing.T) {
	t.Parallel()
	a := startWatchAgent(t, set("V", "one"))
	p := superviseChild(t, a, nil, "record", nil, "--watch")
	p.start(t)
	a.awaitRequest(t, wire.TypeWatch)
	a.dropAndSet(set("V", "two"))
	p.expect(t, "TERM")
	if _, v := p.start(t); v != "two" {
		t.Fatalf("after reconnecting: V=%q, want two", v)
	}
	a.awaitRequest(t, wire.TypeWatch)
	// A reconnection with nothing changed does not restart the program.
	a.dropAndSet(set("V", "two"))
	a.awaitRequest(t, wire.TypeWatch)
	a.set(set("V", "three"))
	p.expect(t, "TERM")
	if _, v := p.start(t); v != "three" {
		t.Fatalf("V=%q, want three", v)
	}
	p.signal(syscall.SIGTERM)
	p.expect(t, "TERM")
	p.wait(t)
	got := p.errText()
	if strings.Count(got, "envlet-exec: WATCH_LOST: ") != 2 || strings.Count(got, "envlet-exec: WATCH_RESUMED: ") != 2 {
		t.Fatalf("stderr %q; want two WATCH_LOST and two WATCH_RESUMED notes", got)
	}
}

// On a terminal (docker run -it, a shell) the program gets the terminal's
// foreground: ^C reaches it once, from the terminal, not a second time
// through the launcher.
func TestWatchTerminal(t *testing.T) {
	t.Parallel()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skip("no pseudo-terminals here:", err)
	}
	defer ptmx.Close()
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	pts, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pts.Close()
	go io.Copy(io.Discard, ptmx) // the terminal's echo

	a := startWatchAgent(t, set("V", "one"))
	self, _ := os.Executable()
	// The launcher as a session leader with the terminal as its own, as a
	// shell or docker run -it makes it.
	sys := &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	q := startSupervisedStdin(t, sys, pts, []string{"PATH=/usr/bin:/bin", "ENVLET_SOCKET=" + a.sock, "ELTEST_CHILD=tty"},
		"--watch", "--", self)
	q.expect(t, "foreground true")
	q.start(t)
	ptmx.Write([]byte{3}) // ^C
	q.expect(t, "INT")
	q.signal(syscall.SIGUSR1)
	q.expect(t, "USR1") // not a second INT
	// A restart hands the terminal to the new program.
	a.set(set("V", "two"))
	q.expect(t, "TERM")
	q.expect(t, "foreground true")
	if _, v := q.start(t); v != "two" {
		t.Fatalf("V=%q", v)
	}
	q.signal(syscall.SIGTERM)
	q.expect(t, "TERM")
	q.wait(t)
}

// As PID 1 of a PID namespace, as in a container, the launcher reaps the
// orphans the kernel hands it, not only its own child.
func TestWatchReapsOrphansAsPID1(t *testing.T) {
	t.Parallel()
	if os.Getuid() != 0 {
		t.Skip("needs root for a new PID namespace")
	}
	a := startWatchAgent(t, set("V", "one"))
	p := superviseChild(t, a, &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}, "orphan", nil, "--watch")
	gc, err := strconv.Atoi(p.expect(t, "orphan "))
	if err != nil {
		t.Fatal(err)
	}
	p.start(t)
	// The grandchild's parent is the launcher now.
	if ppid := statusField(t, gc, "PPid"); ppid != strconv.Itoa(p.cmd.Process.Pid) {
		t.Fatalf("the orphan's parent is %s, not the launcher (%d)", ppid, p.cmd.Process.Pid)
	}
	pidfd, err := unix.PidfdOpen(gc, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	p.signal(syscall.SIGUSR1) // forwarded: the program lets the orphan end
	p.expect(t, "USR1")
	if !exited(pidfd) {
		t.Fatal("the orphan did not exit")
	}
	// It has exited; it is gone once its parent has reaped it, and
	// nothing announces that, so look until it is (the guard turns a
	// zombie left for ever into a failure).
	for deadline := time.Now().Add(guard); ; time.Sleep(5 * time.Millisecond) {
		state := statusField(t, gc, "State")
		if state == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the orphan %d was not reaped: state %q", gc, state)
		}
	}
	p.signal(syscall.SIGTERM)
	p.expect(t, "TERM")
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// exited waits for the process of pidfd to exit, up to the guard limit.
func exited(pidfd int) bool {
	deadline := time.Now().Add(guard)
	for {
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(time.Until(deadline)/time.Millisecond))
		if err == unix.EINTR {
			continue
		}
		return err == nil && n == 1
	}
}

// statusField reads one field of /proc/PID/status, "" when the process is
// gone.
func statusField(t *testing.T, pid int, name string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func TestParseDuration(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"10", 10 * time.Second, true},
		{"0", 0, true},
		{"1.5", 1500 * time.Millisecond, true},
		{"500ms", 500 * time.Millisecond, true},
		{"10s", 10 * time.Second, true},
		{"2m", 2 * time.Minute, true},
		{"2min", 2 * time.Minute, true},
		{"1h", time.Hour, true},
		{"1m30s", 90 * time.Second, true},
		{"1.5m", 90 * time.Second, true},
		{"", 0, false},
		{"s", 0, false},
		{"10x", 0, false},
		{"-1s", 0, false},
		{"10 s", 0, false},
		{"9999999h", 0, false},
		{"1.2.3s", 0, false},
	} {
		got, ok := parseDuration(tt.in)
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseOnChange(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want onChange
		ok   bool
	}{
		{"restart", onChange{action: restart}, true},
		{"exit", onChange{action: exitOnChange}, true},
		{"signal:HUP", onChange{action: signalOnChange, sig: unix.SIGHUP}, true},
		{"signal:SIGHUP", onChange{action: signalOnChange, sig: unix.SIGHUP}, true},
		{"signal:usr1", onChange{action: signalOnChange, sig: unix.SIGUSR1}, true},
		{"signal:", onChange{}, false},
		{"signal:SIG", onChange{}, false},
		{"signal:1", onChange{}, false},
		{"signal:NOPE", onChange{}, false},
		{"Restart", onChange{}, false},
		{"", onChange{}, false},
	} {
		got, ok := parseOnChange(tt.in)
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseOnChange(%q) = %+v, %v; want %+v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
	for _, sn := range signalNames {
		if got := signalName(sn.sig); got != "SIG"+sn.name {
			t.Errorf("signalName(%d) = %q", sn.sig, got)
		}
	}
}

// BenchmarkWatchRestart: the time from a change the agent announces
// (Changed) to the supervised program running with the new value: the
// launcher's GetEnv, SIGTERM, reap, fork and exec, and the program's first
// line; against the floor of starting the same program directly. The agent
// is the test's own, so this is the launcher's share of a restart (see
// e2e's BenchmarkWatchRestart for the whole path through envletd).
//
//	go test -run '^$' -bench WatchRestart -benchtime 1000x ./launcher/
func BenchmarkWatchRestart(b *testing.B) {
	prog := []string{"sh", "-c", `echo "$V"; exec sleep 1000000`}
	a := startWatchAgent(b, set("V", "0"))
	p := startSupervised(b, nil, []string{"PATH=/usr/bin:/bin", "ENVLET_SOCKET=" + a.sock},
		append([]string{"--watch", "--"}, prog...)...)
	p.expect(b, "0")

	floor := make([]time.Duration, 0, 200)
	for i := range 200 {
		t0 := time.Now()
		c := exec.Command(prog[0], prog[1:]...)
		c.Env = []string{"PATH=/usr/bin:/bin", "V=" + strconv.Itoa(i)}
		o, _ := c.StdoutPipe()
		c.Start()
		bufio.NewReader(o).ReadString('\n')
		floor = append(floor, time.Since(t0))
		c.Process.Kill()
		c.Wait()
	}

	b.ResetTimer()
	took := make([]time.Duration, 0, b.N)
	for i := 1; i <= b.N; i++ {
		v := strconv.Itoa(i)
		t0 := time.Now()
		a.set(set("V", v))
		p.expect(b, v)
		took = append(took, time.Since(t0))
	}
	b.StopTimer()
	p50, p99, f50 := pct(took, 50), pct(took, 99), pct(floor, 50)
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	row := "%-58s %9s %9s\n"
	b.Logf("\n"+row+row+row+"ratio p50 / floor p50: %.1f×", "over "+strconv.Itoa(len(took))+" changes", "p50", "p99",
		"Changed -> supervised program restarted with the new value", p50.Round(time.Microsecond), p99.Round(time.Microsecond),
		"floor: fork+exec of the same program to its first line", f50.Round(time.Microsecond), pct(floor, 99).Round(time.Microsecond),
		float64(p50)/float64(f50))
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}
