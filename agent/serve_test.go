package agent

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/envlet/envlet/agent/wire"
	"github.com/envlet/envlet/cache"
)

// serveAgent is apiAgent with its workload socket served, in a short
// directory, once setup (if any) has run; it returns the agent, the socket
// path and a stop function (also run at cleanup) that waits for
// serveWorkloads to return.
func serveAgent(t testing.TB, setup func(a *Agent)) (*Agent, string, func()) {
	t.Helper()
	a := apiAgent(t)
	if setup != nil {
		setup(a)
	}
	dir, err := os.MkdirTemp("", "el")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "w.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.serveWorkloads(ctx, l) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serveWorkloads: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("serveWorkloads did not return after its context ended")
		}
		os.RemoveAll(dir)
	}
	t.Cleanup(stop)
	return a, sock, stop
}

// registerAs registers a workload through the admin handler, as root.
func registerAs(t *testing.T, a *Agent, body string) {
	t.Helper()
	admin := &caller{peer: peer{uid: 0}, user: "root", admin: true}
	if w := call(a.adminHandler(), admin, "POST", "/v1/workloads", []byte(body)); w.Code/100 != 2 {
		t.Fatalf("register %s: %d %s", body, w.Code, w.Body.String())
	}
}

// getEnv asks sock for the environment, as envlet-exec does.
func getEnv(t *testing.T, sock string) (wire.Type, []byte) {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(wire.AppendRequest(nil, wire.Request{Type: wire.TypeGetEnv})); err != nil {
		t.Fatal(err)
	}
	typ, payload, err := wire.ReadFrame(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	return typ, payload
}

func setupProject(t *testing.T, a *Agent) {
	t.Helper()
	admin := &caller{peer: peer{uid: 0}, user: "root", admin: true}
	h := a.adminHandler()
	for _, r := range []struct{ method, path, body string }{
		{"POST", "/v1/projects", `{"name":"p"}`},
		{"POST", "/v1/projects/p/members", `{"user":"root"}`},
		{"PUT", "/v1/projects/p/env/PV", `{"value":"c4n4ry-serve-test"}`},
	} {
		if w := call(h, admin, r.method, r.path, []byte(r.body)); w.Code/100 != 2 {
			t.Fatalf("%s %s: %d %s", r.method, r.path, w.Code, w.Body.String())
		}
	}
}

// TestIdentifyReadsProcOnlyWhenNeeded: a caller whose candidate
// registrations match by uid alone is served without reading its /proc
// cgroup file; once a candidate matches by systemd_unit, each request
// reads it (once).
func TestIdentifyReadsProcOnlyWhenNeeded(t *testing.T) {
	a, sock, _ := serveAgent(t, func(a *Agent) {
		setupProject(t, a)
		registerAs(t, a, `{"id":"by-uid","user":"root","project":"p","match":{"uid":0}}`)
		// Registrations of other uids, by cgroup, are no candidates for uid 0.
		registerAs(t, a, `{"id":"other-unit","user":"root","project":"p","match":{"uid":4242,"systemd_unit":"other.service"}}`)
	})

	before := procReads.Load()
	for range 3 {
		if typ, _ := getEnv(t, sock); typ != wire.TypeEnv {
			t.Fatalf("reply %v", typ)
		}
	}
	if n := procReads.Load() - before; n != 0 {
		t.Fatalf("%d /proc reads for callers matched by uid", n)
	}

	registerAs(t, a, `{"id":"by-unit","user":"root","project":"p","match":{"uid":0,"systemd_unit":"not-this-one.service"}}`)
	before = procReads.Load()
	for range 3 {
		if typ, _ := getEnv(t, sock); typ != wire.TypeEnv {
			t.Fatalf("reply %v", typ)
		}
	}
	if n := procReads.Load() - before; n != 3 {
		t.Fatalf("%d /proc reads for 3 requests with a unit-based candidate, want 3", n)
	}
}

// TestSlotReleasedBeforeAudit: a GetEnv connection gives its max_conns
// slot back once its reply is written, even while its audit record waits
// for a log that cannot be written.
func TestSlotReleasedBeforeAudit(t *testing.T) {
	// The audit log becomes a FIFO whose reader reads nothing until the
	// end, and whose pipe is full: the audit writer blocks in write(2),
	// and with a one-byte queue bound the next records wait in put.
	old := maxAuditQueue
	maxAuditQueue = 1
	t.Cleanup(func() { maxAuditQueue = old })
	var stuck *auditLog
	var r *os.File
	a, sock, stop := serveAgent(t, func(a *Agent) {
		setupProject(t, a)
		registerAs(t, a, `{"id":"w","user":"root","project":"p","match":{"uid":0}}`)
		fifo, opened := auditFIFO(t)
		var err error
		if stuck, err = openAudit(fifo, filepath.Join(t.TempDir(), "audit.key"), cache.NewPool()); err != nil {
			t.Fatal(err)
		}
		r = <-opened
		// Raw syscalls: an os.File would wait for room rather than say
		// EAGAIN.
		filler, err := syscall.Open(fifo, syscall.O_WRONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		for {
			if _, err := syscall.Write(filler, make([]byte, 4096)); errors.Is(err, syscall.EAGAIN) {
				break
			} else if err != nil {
				t.Fatal(err)
			}
		}
		syscall.Close(filler)
		a.audit.Close()
		a.audit = stuck
	})

	// Whatever happens, let the log drain before the stop waits for the
	// handlers (cleanups run last first).
	got := make(chan string, 1)
	var drainOnce sync.Once
	drain := func() {
		drainOnce.Do(func() {
			go func() {
				b, _ := readAllFrom(r)
				got <- string(b)
			}()
		})
	}
	t.Cleanup(drain)

	const n = 3
	for range n {
		if typ, _ := getEnv(t, sock); typ != wire.TypeEnv {
			t.Fatalf("reply %v", typ)
		}
	}
	// Every reply is out, no audit line is written (the pipe is full), and
	// the connections are no longer counted.
	lim := a.limiter("workload")
	deadline := time.Now().Add(20 * time.Second)
	for {
		total, _ := lim.held()
		stuck.q.mu.Lock()
		written := stuck.q.written
		stuck.q.mu.Unlock()
		if written != 0 {
			t.Fatal("an audit line got through a full pipe; the test proves nothing")
		}
		if total == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replies sent, the audit log stuck: the socket still holds %d connections", total)
		}
		time.Sleep(5 * time.Millisecond)
	}

	// Let the log drain: every serve is recorded all the same.
	drain()
	stop()
	stuck.Close()
	out := <-got
	if c := strings.Count(out, `"action":"serve"`); c != n {
		t.Fatalf("%d serve records after the drain, want %d", c, n)
	}
	if strings.Contains(out, "c4n4ry-serve-test") {
		t.Fatal("a value in the audit log")
	}
}

// readAllFrom reads r to EOF.
func readAllFrom(r *os.File) ([]byte, error) {
	defer r.Close()
	var out []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			return out, err
		}
	}
}

// TestServeStopCutsWaitingConnections: stopping the workload socket does
// not wait out request_timeout for a peer that connected and sent
// nothing, and records no refusal for it.
func TestServeStopCutsWaitingConnections(t *testing.T) {
	a, sock, stop := serveAgent(t, func(a *Agent) { a.cfg.RequestTimeout = time.Hour })
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	lim := a.limiter("workload")
	for deadline := time.Now().Add(20 * time.Second); ; {
		if total, _ := lim.held(); total == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the connection was never counted")
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop() // fails the test if serveWorkloads does not return
	a.audit.Close()
	b, _ := os.ReadFile(filepath.Join(a.cfg.AuditLog))
	if strings.Contains(string(b), `"action":"refuse"`) {
		t.Errorf("a refusal was recorded for a connection cut by the stop:\n%s", b)
	}
}

// TestRecordNameCachesMisses: the user name of a workload-socket audit
// record trusts a uid's missing passwd entry for missTTL (the record holds
// the uid), while userName, which maps admin callers to accounts, still
// looks a missing name up every time.
func TestRecordNameCachesMisses(t *testing.T) {
	a := testAgent(t)
	names, calls := fakeUsers(t)

	if got := a.recordName(5002); got != "5002" || *calls != 1 {
		t.Fatalf("unknown uid: %q after %d lookups", got, *calls)
	}
	for range 3 {
		if got := a.recordName(5002); got != "5002" || *calls != 1 {
			t.Fatalf("a known miss: %q after %d lookups, want no new lookup", got, *calls)
		}
	}
	names["5002"] = "late"
	if got := a.recordName(5002); got != "5002" || *calls != 1 {
		t.Fatalf("within missTTL: %q after %d lookups", got, *calls)
	}
	if got := a.userName(5002); got != "late" || *calls != 2 {
		t.Fatalf("userName after the user was created: %q after %d lookups, want late at once", got, *calls)
	}
	if got := a.recordName(5002); got != "late" || *calls != 2 {
		t.Fatalf("recordName once the name is known: %q after %d lookups", got, *calls)
	}
	// An aged miss is looked up again.
	delete(names, "5003")
	a.recordName(5003)
	names["5003"] = "aged"
	a.names.Store(uint32(5003), cachedMiss{"5003", time.Now().Add(-missTTL - time.Second)})
	if got := a.recordName(5003); got != "aged" {
		t.Fatalf("after missTTL: %q, want aged", got)
	}
}
