package e2e

import (
	"encoding/json"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/envlet/envlet/agent/wire"
)

// Rotation (docs/design.md §7), the agent's side, with a Watch client made by hand
// from the wire protocol: the Env frame, then a Changed frame per change
// of the workload's environment, until either side closes.

// rawConn is a connection to the workload socket from this (root) process.
type rawConn struct {
	t *testing.T
	c *net.UnixConn
}

func dialWorkload(t *testing.T, sock string, req wire.Request) *rawConn {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(wire.AppendRequest(nil, req)); err != nil {
		t.Fatal(err)
	}
	return &rawConn{t, c}
}

// next reads one frame. The deadline guards against a hang; it is not a
// timing assertion.
func (r *rawConn) next() (wire.Type, []byte, error) {
	r.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	t, p, err := wire.ReadFrame(r.c, nil)
	if err != nil {
		return 0, nil, err
	}
	return t, append([]byte(nil), p...), nil
}

// env reads an Env frame and returns its revision and entries.
func (r *rawConn) env() (uint64, map[string]string) {
	r.t.Helper()
	typ, p, err := r.next()
	if err != nil {
		r.t.Fatal(err)
	}
	if typ == wire.TypeError {
		code, msg, _ := wire.DecodeError(p)
		r.t.Fatalf("refused: %s: %s", code, msg)
	}
	if typ != wire.TypeEnv {
		r.t.Fatalf("got %v, want Env", typ)
	}
	rev, entries, err := wire.DecodeEnv(p)
	if err != nil {
		r.t.Fatal(err)
	}
	m := map[string]string{}
	for _, e := range entries {
		if !e.Unset {
			m[e.Name] = string(e.Value)
		}
	}
	return rev, m
}

// changed reads a Changed frame and returns its revision.
func (r *rawConn) changed() uint64 {
	r.t.Helper()
	typ, p, err := r.next()
	if err != nil {
		r.t.Fatal(err)
	}
	if typ != wire.TypeChanged {
		r.t.Fatalf("got %v, want Changed", typ)
	}
	rev, err := wire.DecodeChanged(p)
	if err != nil {
		r.t.Fatal(err)
	}
	return rev
}

// refusal reads an Error frame and returns its code.
func (r *rawConn) refusal() string {
	r.t.Helper()
	typ, p, err := r.next()
	if err != nil || typ != wire.TypeError {
		r.t.Fatalf("got %v %v, want an Error", typ, err)
	}
	code, _, _ := wire.DecodeError(p)
	return code
}

type listed struct {
	ID       string `json:"id"`
	Revision int64  `json:"revision"`
	EnvRev   int64  `json:"env_revision"`
	Stale    bool   `json:"stale"`
}

func (a *agentProc) workload(id string) listed {
	a.t.Helper()
	var list []listed
	if err := json.Unmarshal([]byte(a.cli("workload", "list", "--json")), &list); err != nil {
		a.t.Fatal(err)
	}
	for _, w := range list {
		if w.ID == id {
			return w
		}
	}
	a.t.Fatalf("workload %s not listed", id)
	return listed{}
}

// setConfig adds top-level config lines and restarts the agent.
func (a *agentProc) setConfig(lines string) {
	a.t.Helper()
	b, err := os.ReadFile(a.config)
	if err != nil {
		a.t.Fatal(err)
	}
	conf := strings.Replace(string(b), "[defaults]", lines+"\n[defaults]", 1)
	if err := os.WriteFile(a.config, []byte(conf), 0o644); err != nil {
		a.t.Fatal(err)
	}
	a.restart()
}

// rotationFixture: workload "r" run by uid 0 (this test process) as user
// ru of project p, with V=one.
func rotationFixture(t *testing.T) *agentProc {
	a := startAgent(t, "PATH = /usr/bin:/bin")
	a.cli("project", "create", "p")
	a.cli("project", "add-member", "p", "ru")
	a.cli("env", "set", "--user", "ru", "V", "one")
	a.register(map[string]any{"id": "r", "user": "ru", "project": "p", "match": map[string]any{"uid": 0}})
	return a
}

func TestRotationWatch(t *testing.T) {
	a := rotationFixture(t)
	a.setConfig("request_timeout = 1s")
	w := dialWorkload(t, a.workSock, wire.Request{Type: wire.TypeWatch})
	if _, env := w.env(); env["V"] != "one" {
		t.Fatalf("first Env: %v", env)
	}
	if l := a.workload("r"); l.Stale || l.Revision == 0 {
		t.Fatalf("after the first Env: %+v", l)
	}

	a.cli("env", "set", "--user", "ru", "V", "two")
	rev := w.changed()
	l := a.workload("r")
	if int64(rev) != l.EnvRev || !l.Stale {
		t.Fatalf("Changed %d; workload list %+v: want env_revision %d and stale until it fetches", rev, l, rev)
	}
	// The launcher fetches again: the new value, and no longer stale.
	g := dialWorkload(t, a.workSock, wire.Request{Type: wire.TypeGetEnv})
	if _, env := g.env(); env["V"] != "two" {
		t.Fatalf("GetEnv after Changed: %v", env)
	}
	if l := a.workload("r"); l.Stale || l.Revision < int64(rev) {
		t.Fatalf("after the fetch: %+v", l)
	}

	// A change that leaves this workload's environment as it was sends
	// nothing: the next frame is for the next change of its own.
	a.cli("env", "set", "--user", "someone-else", "V", "x")
	a.cli("env", "set", "--user", "ru", "V", "two") // the same value
	a.cli("project", "env", "set", "p", "W", "w")
	if rev := w.changed(); int64(rev) != a.workload("r").EnvRev || int64(rev) != a.revision() {
		t.Fatalf("Changed %d after the project change; env_revision %d, store %d", rev, a.workload("r").EnvRev, a.revision())
	}

	// Idle past the request deadline (1 s here): a watch is not bound by
	// it. (Waiting out a timeout on purpose, not synchronising.)
	time.Sleep(1500 * time.Millisecond)
	a.cli("env", "set", "--user", "ru", "V", "three")
	w.changed()

	// The launcher closes: the agent drops the watch.
	w.c.Close()
	a.waitLog("watch closed by the launcher: workload=r", 1)

	// Deregistration ends a watch from the agent's side.
	w2 := dialWorkload(t, a.workSock, wire.Request{Type: wire.TypeWatch})
	w2.env()
	a.cli("workload", "delete", "r")
	if typ, _, err := w2.next(); err == nil {
		t.Fatalf("after deregistration: got %v, want the connection closed", typ)
	}
	w3 := dialWorkload(t, a.workSock, wire.Request{Type: wire.TypeWatch})
	if code := w3.refusal(); code != "WORKLOAD_UNKNOWN" {
		t.Fatalf("watch of a deregistered workload: %s", code)
	}
}

// TestRotationSlowWatcher: a watcher that never reads does not hold up
// changes, nor the watchers that do read.
func TestRotationSlowWatcher(t *testing.T) {
	a := rotationFixture(t)
	slow := dialWorkload(t, a.workSock, wire.Request{Type: wire.TypeWatch})
	fast := dialWorkload(t, a.workSock, wire.Request{Type: wire.TypeWatch})
	fast.env()
	const changes = 100
	for i := range changes {
		a.cli("env", "set", "--user", "ru", "V", "v"+strings.Repeat("x", i))
	}
	last := uint64(a.workload("r").EnvRev)
	for _, w := range []*rawConn{fast, slow} {
		if w == slow {
			w.env()
		}
		n := 0
		for rev := uint64(0); rev != last; n++ {
			if rev = w.changed(); rev > last {
				t.Fatalf("Changed %d beyond the last revision %d", rev, last)
			}
		}
		if n > changes {
			t.Fatalf("%d Changed frames for %d changes", n, changes)
		}
	}
}

// TestRotationWatchLimits: a workload holds at most 64 watches; watches do
// not use up the uid's connection budget (max_conns_per_uid), so the
// GetEnv each watching launcher sends after a change is still served.
func TestRotationWatchLimits(t *testing.T) {
	a := rotationFixture(t)
	a.setConfig("max_conns_per_uid = 4\nrequest_timeout = 1s")
	var ws []*rawConn
	for range 64 {
		w := dialWorkload(t, a.workSock, wire.Request{Type: wire.TypeWatch})
		w.env()
		ws = append(ws, w)
	}
	extra := dialWorkload(t, a.workSock, wire.Request{Type: wire.TypeWatch})
	if code := extra.refusal(); code != "WATCH_LIMIT_EXCEEDED" {
		t.Fatalf("65th watch: %s", code)
	}
	g := dialWorkload(t, a.workSock, wire.Request{Type: wire.TypeGetEnv})
	if _, env := g.env(); env["V"] != "one" {
		t.Fatalf("GetEnv beside 64 watches: %v", env)
	}
	a.cli("env", "set", "--user", "ru", "V", "two")
	for _, w := range ws {
		w.changed()
	}
	// One closes; its slot is free again.
	ws[0].c.Close()
	a.waitLog("watch closed by the launcher: workload=r", 1)
	again := dialWorkload(t, a.workSock, wire.Request{Type: wire.TypeWatch})
	if _, env := again.env(); env["V"] != "two" {
		t.Fatalf("a watch in the freed slot: %v", env)
	}
	// The agent stopping ends every watch.
	a.stop()
	if _, _, err := again.next(); err == nil {
		t.Fatal("a watch outlived the agent")
	}
}
