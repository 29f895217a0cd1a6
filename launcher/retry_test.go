package launcher

import (
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/envlet/envlet/agent/wire"
)

// TestRetryBusyAgent: refusals that say the agent is busy
// (TOO_MANY_CONNECTIONS, BUSY) are retried within ENVLET_RETRY; any other
// refusal is final at once.
func TestRetryBusyAgent(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		code     string
		refusals int64 // before the agent answers with the env
		env      []string
		exit     int
		requests int // exactly; 0: more than one
	}{
		{name: "TooManyConnections", code: "TOO_MANY_CONNECTIONS", refusals: 3, requests: 4},
		{name: "Busy", code: "BUSY", refusals: 2, requests: 3},
		{name: "NotRegistered", code: "WORKLOAD_UNKNOWN", refusals: 1 << 40, exit: 125, requests: 1},
		{name: "Ambiguous", code: "WORKLOAD_AMBIGUOUS", refusals: 1 << 40, exit: 125, requests: 1},
		{name: "RetryOff", code: "TOO_MANY_CONNECTIONS", refusals: 1, env: []string{"ENVLET_RETRY=0"}, exit: 125, requests: 1},
		{name: "GivesUp", code: "TOO_MANY_CONNECTIONS", refusals: 1 << 40, env: []string{"ENVLET_RETRY=0.05"}, exit: 125},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var n atomic.Int64
			env := wire.AppendEnv(nil, 1, []wire.Entry{set("GOT", "yes")})
			a := startAgent(t, func(wire.Request) []byte {
				if n.Add(1) <= tt.refusals {
					return wire.AppendError(nil, tt.code, "refused for the test")
				}
				return env
			})
			r := launch(t, nil, append([]string{"ENVLET_SOCKET=" + a.sock}, tt.env...), "/usr/bin/env")
			if r.code != tt.exit {
				t.Fatalf("exit %d, want %d; stderr %q", r.code, tt.exit, r.stderr)
			}
			got := len(a.requests())
			if tt.requests != 0 && got != tt.requests || tt.requests == 0 && got < 2 {
				t.Fatalf("%d requests, want %d", got, tt.requests)
			}
			if tt.exit == 0 && !strings.Contains(r.stdout, "GOT=yes\n") {
				t.Fatalf("env after retries: %q", r.stdout)
			}
			if tt.exit != 0 && !strings.HasPrefix(r.stderr, "envlet-exec: "+tt.code+": agent refused: ") {
				t.Fatalf("stderr %q", r.stderr)
			}
		})
	}
}

// TestRetryTransientConnect: a socket nobody listens on and a missing
// socket file (an agent restarting: the old one removed it, the new one has
// not bound it yet) are worth retrying.
func TestRetryTransientConnect(t *testing.T) {
	dir, err := os.MkdirTemp("", "el")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bound := filepath.Join(dir, "bound.sock")
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: bound}); err != nil { // bound, never listening
		t.Fatal(err)
	}
	for _, tt := range []struct {
		socket    string
		transient bool
		text      string
	}{
		{bound, true, "connection refused"},
		{filepath.Join(dir, "missing.sock"), true, "no such file"},
	} {
		_, _, _, f := openOnce(tt.socket, defaultTimeout, wire.Request{Type: wire.TypeGetEnv})
		if f == nil || f.code != "AGENT_UNREACHABLE" || f.transient != tt.transient || !strings.Contains(f.msg, tt.text) {
			t.Errorf("%s: %+v, want transient %v", tt.socket, f, tt.transient)
		}
	}
	// Through the binary: it retries the refused connect, then gives up.
	r := launch(t, nil, []string{"ENVLET_SOCKET=" + bound, "ENVLET_RETRY=0.05"}, "/usr/bin/true")
	if r.code != 125 || !strings.Contains(r.stderr, "AGENT_UNREACHABLE") || !strings.Contains(r.stderr, "connection refused") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
}

// The retry budget is read like ENVLET_TIMEOUT.
func TestRetrySetting(t *testing.T) {
	for _, tt := range []struct {
		env  []string
		want string
	}{
		{nil, "2s"},
		{[]string{"ENVLET_RETRY=0"}, "0s"},
		{[]string{"ENVLET_RETRY=0.25"}, "250ms"},
	} {
		c, f := newClient(options{}, tt.env)
		if f != nil || c.retry.String() != tt.want {
			t.Errorf("%v: %v %+v, want %s", tt.env, c.retry, f, tt.want)
		}
	}
	if _, f := newClient(options{}, []string{"ENVLET_RETRY=soon"}); f == nil || !strings.Contains(f.msg, "ENVLET_RETRY must be a number of seconds") {
		t.Errorf("a bad ENVLET_RETRY: %+v", f)
	}
	r := launch(t, nil, []string{"ENVLET_SOCKET=/nonexistent", "ENVLET_RETRY=-1"}, "/usr/bin/true")
	if r.code != 125 || !strings.Contains(r.stderr, "USAGE: ENVLET_RETRY") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestRetryCutReply: a connection cut before the whole reply came (the
// agent killed or restarted mid-request) is asked again within
// ENVLET_RETRY: a GetEnv changes nothing, so a second one is safe. A whole
// frame of another protocol is final at once.
func TestRetryCutReply(t *testing.T) {
	t.Parallel()
	env := wire.AppendEnv(nil, 1, []wire.Entry{set("GOT", "yes"), set("PAD", strings.Repeat("x", 200))})
	bad := wire.AppendEnv(nil, 1, []wire.Entry{set("GOT", "yes")})
	bad[0] ^= 0xff // not this protocol: the same answer every time
	for _, tt := range []struct {
		name     string
		first    []byte // the reply to the first two requests; nil closes without a word
		exit     int
		requests int
	}{
		{name: "HalfFrame", first: env[:len(env)/2], requests: 3},
		{name: "HalfHeader", first: env[:5], requests: 3},
		{name: "NoReply", first: nil, requests: 3},
		{name: "HeaderOnly", first: env[:wire.HeaderSize], requests: 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var n atomic.Int64
			a := startAgent(t, func(wire.Request) []byte {
				if n.Add(1) <= 2 {
					return tt.first
				}
				return env
			})
			r := launch(t, nil, []string{"ENVLET_SOCKET=" + a.sock, "ENVLET_RETRY=30"}, "/usr/bin/env")
			if r.code != tt.exit || !strings.Contains(r.stdout, "GOT=yes\n") {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", r.code, tt.exit, r.stdout, r.stderr)
			}
			if got := len(a.requests()); got != tt.requests {
				t.Fatalf("%d requests, want %d", got, tt.requests)
			}
		})
	}
	t.Run("BadFrameIsFinal", func(t *testing.T) {
		t.Parallel()
		a := startAgent(t, func(wire.Request) []byte { return bad })
		r := launch(t, nil, []string{"ENVLET_SOCKET=" + a.sock, "ENVLET_RETRY=30"}, "/usr/bin/true")
		if r.code != 125 || !strings.HasPrefix(r.stderr, "envlet-exec: BAD_REPLY: ") || len(a.requests()) != 1 {
			t.Fatalf("exit %d, %d requests, stderr %q", r.code, len(a.requests()), r.stderr)
		}
	})
}

// TestRetryMissingSocket: a launcher started while the socket file is
// missing (the agent between its old and its new socket) waits for it
// within ENVLET_RETRY rather than fail.
func TestRetryMissingSocket(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "el")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "w.sock")
	done := make(chan result, 1)
	go func() {
		done <- launch(t, nil, []string{"ENVLET_SOCKET=" + sock, "ENVLET_RETRY=30"}, "/usr/bin/env")
	}()
	// Give the launcher time to find the socket missing (the code before
	// this retry exits 125 at once); however long it takes, it must wait.
	select {
	case r := <-done:
		t.Fatalf("the launcher did not wait for the socket: exit %d, stderr %q", r.code, r.stderr)
	case <-time.After(300 * time.Millisecond):
	}
	a := startAgentAt(t, sock, envReply(set("GOT", "yes")))
	r := <-done
	if r.code != 0 || !strings.Contains(r.stdout, "GOT=yes\n") || len(a.requests()) != 1 {
		t.Fatalf("exit %d, stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
}
