package launcher

import (
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// envlet-exec --watch: the launcher stays as the program's parent instead
// of exec'ing it, so that it can act on a change of the environment.
//
// One goroutine (supervise's loop) owns the program: it starts it, forwards
// signals to it, reaps it and every other child, and stops it on a change.
// A second one (watcher.run) owns the Watch connection and turns what the
// agent says into events for the loop. os/signal delivers signals to the
// loop; it adds some 20 KB to the binary, where a sigwait loop of our own
// would fight the Go runtime, which runs signal handlers on every thread.

// action is what a change does to the program (--on-change).
type action uint8

const (
	restart        action = iota + 1 // stop it, start it again with the new env
	exitOnChange                     // stop it, and exit with its status
	signalOnChange                   // send it a signal; it re-reads what it reads
)

type onChange struct {
	action action
	sig    unix.Signal // for signalOnChange
}

const (
	defaultGrace = 10 * time.Second
	// drainPoll is how often the launcher looks whether the rest of a
	// stopped program's process group has gone, once the program itself
	// has exited; nothing tells it when processes that are not its
	// children exit.
	drainPoll = 20 * time.Millisecond
)

// forwarded are the signals the launcher passes on to the program. Not
// SIGCHLD (the launcher's own business), not SIGPIPE (it is about the
// launcher's own writes), not SIGTSTP, SIGTTIN, SIGTTOU (they stop the
// launcher as a job; the terminal sends them to the program itself when it
// is in the foreground), not SIGKILL and SIGSTOP (they cannot be caught),
// and not SIGURG (the Go runtime's).
var forwarded = []os.Signal{
	unix.SIGHUP, unix.SIGINT, unix.SIGQUIT, unix.SIGTERM, unix.SIGUSR1, unix.SIGUSR2,
	unix.SIGWINCH, unix.SIGALRM, unix.SIGCONT, unix.SIGPWR, unix.SIGVTALRM, unix.SIGXCPU, unix.SIGXFSZ,
}

// parseOnChange reads --on-change: restart, exit, or signal:NAME where
// NAME is a signal name with or without SIG, in any case (signal:HUP,
// signal:sigusr1).
func parseOnChange(s string) (onChange, bool) {
	switch s {
	case "restart":
		return onChange{action: restart}, true
	case "exit":
		return onChange{action: exitOnChange}, true
	}
	const prefix = "signal:"
	if len(s) <= len(prefix) || s[:len(prefix)] != prefix {
		return onChange{}, false
	}
	// ASCII upper case by hand: strings.ToUpper would link the Unicode
	// tables.
	name := []byte(s[len(prefix):])
	for i, c := range name {
		if 'a' <= c && c <= 'z' {
			name[i] = c - 'a' + 'A'
		}
	}
	n := string(name)
	if len(n) > 3 && n[:3] == "SIG" {
		n = n[3:]
	}
	for _, sn := range signalNames {
		if sn.name == n {
			return onChange{action: signalOnChange, sig: sn.sig}, true
		}
	}
	return onChange{}, false
}

// signalNames are the signals --on-change can name. A table of our own:
// unix.SignalNum builds a map of every signal, 4 KB more.
var signalNames = [...]struct {
	name string
	sig  unix.Signal
}{
	{"HUP", unix.SIGHUP}, {"INT", unix.SIGINT}, {"QUIT", unix.SIGQUIT}, {"TERM", unix.SIGTERM},
	{"USR1", unix.SIGUSR1}, {"USR2", unix.SIGUSR2}, {"WINCH", unix.SIGWINCH}, {"ALRM", unix.SIGALRM},
	{"CONT", unix.SIGCONT}, {"PWR", unix.SIGPWR}, {"VTALRM", unix.SIGVTALRM}, {"XCPU", unix.SIGXCPU},
	{"XFSZ", unix.SIGXFSZ}, {"KILL", unix.SIGKILL}, {"STOP", unix.SIGSTOP}, {"TSTP", unix.SIGTSTP},
	{"TTIN", unix.SIGTTIN}, {"TTOU", unix.SIGTTOU}, {"PIPE", unix.SIGPIPE}, {"IO", unix.SIGIO},
	{"URG", unix.SIGURG}, {"PROF", unix.SIGPROF}, {"SYS", unix.SIGSYS}, {"ABRT", unix.SIGABRT},
}

// signalName is "SIGHUP" for SIGHUP, the number for a signal not in the
// table.
func signalName(sig unix.Signal) string {
	for _, sn := range signalNames {
		if sn.sig == sig {
			return "SIG" + sn.name
		}
	}
	return "signal " + strconv.Itoa(int(sig))
}

// parseDuration reads --grace: a bare number of seconds, as systemd takes
// it, or numbers with units ms, s, m (or min), h, as in 500ms, 10s, 1m30s,
// 1.5m; at most a year. By hand: time.ParseDuration links 4 KB.
func parseDuration(s string) (time.Duration, bool) {
	if d, ok := parseSeconds(s); ok || s == "" {
		return d, ok
	}
	const limit = 365 * 24 * time.Hour
	var total time.Duration
	for s != "" {
		i := 0
		for i < len(s) && (s[i] == '.' || '0' <= s[i] && s[i] <= '9') {
			i++
		}
		j := i
		for j < len(s) && s[j] != '.' && (s[j] < '0' || s[j] > '9') {
			j++
		}
		d, ok := parseSeconds(s[:i]) // as if the unit were seconds
		if !ok {
			return 0, false
		}
		var scale time.Duration
		switch s[i:j] {
		case "ms":
			d /= 1000
			scale = 1
		case "s":
			scale = 1
		case "m", "min":
			scale = 60
		case "h":
			scale = 3600
		default:
			return 0, false
		}
		if d > limit/scale {
			return 0, false
		}
		total += d * scale
		if total > limit {
			return 0, false
		}
		s = s[j:]
	}
	return total, true
}

// event is what the watcher tells the loop.
type event struct {
	kind eventKind
	rev  uint64
	env  []string // the merged environment at rev; nil when it could not be fetched
	f    *failure // why the connection was lost, or why the fetch failed
}

type eventKind uint8

const (
	changed     eventKind = iota + 1 // a Changed frame, and the env fetched after it
	lost                             // the Watch connection broke; the watcher reconnects
	reconnected                      // a new Watch connection, and the Env it opened with
)

// supervisor is the loop's state.
type supervisor struct {
	argv     []string
	onChange onChange
	grace    time.Duration
	stderr   io.Writer

	child int      // the program's pid, 0 when it is not running
	pgid  int      // the program's process group (its pid), kept after it exits
	env   []string // the environment the program was started with
	known []string // the latest environment the agent gave; nil when unknown
	code  int      // the program's last exit status, as a shell reports it

	stopping action    // restart or exitOnChange while the program is being stopped; 0 otherwise
	next     []string  // the environment to restart with
	deadline time.Time // when the grace period of a stop ends
	killed   bool      // SIGKILL was sent to the process group in this stop
	shutdown bool      // a SIGTERM, SIGINT or SIGQUIT was forwarded: no more restarts
	done     bool      // the loop is over; exit with code

	// The stop's timer: a goroutine that sleeps and then sends its
	// generation on alarms; an alarm from an older generation is stale.
	// (time.Timer would link time's formatting and zone loading, 50 KB,
	// through its chan time.Time.)
	alarms chan uint64
	armed  uint64 // the generation of the timer that counts, 0 for none
	gen    uint64
}

// supervise runs envlet-exec --watch: it opens a Watch connection, starts
// the program with the environment the agent sends first, and then runs
// until the program exits for good. It returns the program's exit status
// (128+N when a signal N ended it), or a failure before the program first
// started: the agent unreachable or refusing (125), the program not found
// (127) or not runnable (126). A failure to start the program again after a
// restart ends the launcher with that failure's status, after its message.
func supervise(c client, o options, environ []string) (int, *failure) {
	sigs := make(chan os.Signal, 64)
	// Before the first child starts, so that no SIGCHLD is missed; signals
	// that arrive before the program runs wait here and reach it once it
	// does.
	signal.Notify(sigs, append(forwarded, unix.SIGCHLD, unix.SIGPIPE)...)

	w := &watcher{c: c, environ: environ}
	fd, env, _, f := w.open()
	if f != nil {
		return 0, f
	}
	s := &supervisor{argv: o.argv, onChange: o.onChange, grace: o.grace, stderr: os.Stderr, known: env,
		alarms: make(chan uint64, 1)}
	if f := s.start(env); f != nil {
		unix.Close(fd)
		return 0, f
	}
	events := make(chan event, 4)
	go w.run(fd, events)
	return s.loop(sigs, events), nil
}

// loop handles signals, the watcher's events and the stop's timer until
// the program has exited for good. Every channel is read for as long as the
// process lives, so no send on one blocks for long.
func (s *supervisor) loop(sigs <-chan os.Signal, events <-chan event) int {
	for !s.done {
		select {
		case sig := <-sigs:
			s.signal(sig.(syscall.Signal))
		case ev := <-events:
			s.event(ev)
		case gen := <-s.alarms:
			if gen == s.armed {
				s.armed = 0
				s.drain()
			}
		}
	}
	return s.code
}

// arm sets the stop's timer to fire in d, replacing any other.
func (s *supervisor) arm(d time.Duration) {
	s.gen++
	s.armed = s.gen
	go func(gen uint64, alarms chan<- uint64) {
		time.Sleep(d)
		alarms <- gen
	}(s.gen, s.alarms)
}

// note writes one line on stderr, as "envlet-exec: CODE: message". It never
// holds a value.
func (s *supervisor) note(code, msg string) {
	io.WriteString(s.stderr, "envlet-exec: "+code+": "+msg+"\n")
}

// start runs argv with env as a child in its own process group, in the
// terminal's foreground when the launcher's stdin is a terminal it holds.
func (s *supervisor) start(env []string) *failure {
	sys := &syscall.SysProcAttr{Setpgid: true}
	if s.foreground() {
		sys.Foreground, sys.Ctty = true, 0
	}
	// The program inherits stdin, stdout and stderr, and every other fd
	// the launcher inherited without close-on-exec (socket activation's,
	// for one); a standard fd the launcher was started without stays
	// closed in the program too.
	files := []uintptr{0, 1, 2}
	for i := range files {
		if _, err := unix.FcntlInt(uintptr(i), unix.F_GETFD, 0); err != nil {
			files[i] = ^uintptr(0)
		}
	}
	attr := &syscall.ProcAttr{Env: env, Files: files, Sys: sys}
	f := findAndRun(s.argv, env, func(path string) error {
		pid, err := syscall.ForkExec(path, s.argv, attr)
		if err == nil {
			s.child, s.pgid = pid, pid
		}
		return err
	})
	if f != nil {
		return f
	}
	s.env, s.stopping, s.killed = env, 0, false
	s.next = nil
	return nil
}

// foreground says whether the program should take the terminal: stdin is a
// terminal whose foreground process group is the launcher's, or that of the
// program it replaces. Then the terminal's own signals (^C, ^\, window size)
// reach the program once, straight from the terminal, as they would without
// the launcher.
func (s *supervisor) foreground() bool {
	fg, err := unix.IoctlGetInt(0, unix.TIOCGPGRP)
	if err != nil {
		return false
	}
	return fg == unix.Getpgrp() || (s.pgid != 0 && fg == s.pgid)
}

func (s *supervisor) signal(sig syscall.Signal) {
	switch sig {
	case unix.SIGCHLD:
		s.reap()
		return
	case unix.SIGPIPE:
		return
	case unix.SIGTERM, unix.SIGINT, unix.SIGQUIT:
		// Someone wants the program to end: a change must not start it
		// again.
		s.shutdown = true
	}
	if s.child != 0 {
		unix.Kill(s.child, sig)
	}
}

// reap collects every child that has exited: the program, and, when the
// launcher is PID 1 of a container, every orphan the kernel hands it.
func (s *supervisor) reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		if pid != s.child {
			continue
		}
		s.child = 0
		switch {
		case ws.Exited():
			s.code = ws.ExitStatus()
		case ws.Signaled():
			s.code = 128 + int(ws.Signal())
		}
		if s.stopping == 0 {
			// The program ended on its own (or on a signal we passed on):
			// so does the launcher.
			s.done = true
			return
		}
		s.drain()
	}
}

func (s *supervisor) event(ev event) {
	switch ev.kind {
	case lost:
		s.note("WATCH_LOST", "lost the agent ("+ev.f.code+": "+ev.f.msg+"); the program keeps running; reconnecting")
		return
	case reconnected:
		s.note("WATCH_RESUMED", "watching the agent again at revision "+strconv.FormatUint(ev.rev, 10))
		// Changes made while the connection was down sent no Changed:
		// compare what the agent serves now with what we last knew.
		if slices.Equal(ev.env, s.known) {
			return
		}
	}
	rev := "revision " + strconv.FormatUint(ev.rev, 10) + ": "
	if ev.env != nil {
		s.known = ev.env
	} else if s.onChange.action == restart {
		s.note(ev.f.code, rev+"could not fetch the new environment ("+ev.f.msg+"); "+s.argv[0]+" keeps the one it has")
		return
	}
	if s.shutdown {
		return
	}
	switch s.onChange.action {
	case signalOnChange:
		if s.child != 0 {
			s.note("CHANGED", rev+"sending "+signalName(s.onChange.sig)+" to "+s.argv[0])
			unix.Kill(s.child, s.onChange.sig)
		}
	case exitOnChange:
		s.note("CHANGED", rev+"stopping "+s.argv[0]+" (--on-change exit)")
		s.stop(exitOnChange)
	case restart:
		current := s.env
		if s.stopping == restart {
			current = s.next
		}
		if slices.Equal(ev.env, current) {
			return // nothing this program sees has changed
		}
		s.next = ev.env
		if s.stopping == 0 {
			s.note("CHANGED", rev+"restarting "+s.argv[0])
		}
		s.stop(restart)
	}
}

// stop begins to end the program for a restart or an exit: SIGTERM to its
// process group, then the grace period, then SIGKILL. A stop under way
// goes on (a restart picks up the newest environment when it starts).
func (s *supervisor) stop(why action) {
	if s.stopping != 0 {
		if why == exitOnChange {
			s.stopping = why
		}
		return
	}
	s.stopping, s.killed = why, false
	s.deadline = time.Now().Add(s.grace)
	unix.Kill(-s.pgid, unix.SIGTERM)
	s.drain()
}

// drain moves a stop along: it is called when the stop begins, when the
// program has been reaped, and when the timer fires. The stop is over once
// the program and the rest of its process group are gone (a restart must
// not leave the old generation running), or the program is gone and the
// group has had SIGKILL.
func (s *supervisor) drain() {
	s.armed = 0
	groupGone := s.child == 0 && (s.killed || unix.Kill(-s.pgid, 0) == unix.ESRCH)
	if groupGone {
		s.stopped()
		return
	}
	left := time.Until(s.deadline)
	if left <= 0 && !s.killed {
		s.note("KILLED", s.argv[0]+" did not stop within "+durText(s.grace)+" of SIGTERM; sent SIGKILL")
		unix.Kill(-s.pgid, unix.SIGKILL)
		s.killed = true
		if s.child == 0 {
			s.stopped()
		}
		return // the program's SIGCHLD comes next
	}
	if s.killed {
		return
	}
	if s.child == 0 {
		left = min(left, drainPoll)
	}
	s.arm(left)
}

// stopped ends a stop: the launcher exits with the program's status, or
// starts it again with the new environment.
func (s *supervisor) stopped() {
	if s.stopping == exitOnChange || s.shutdown {
		s.done = true
		return
	}
	if f := s.start(s.next); f != nil {
		s.note(f.code, f.msg)
		s.code, s.done = f.exit, true
	}
}
