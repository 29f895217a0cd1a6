package fetch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envlet/envlet/internal/etcdtest"
)

// The etcd tests run against a real etcd (Debian's etcd-server) started on
// loopback ports of their own; see package etcdtest. Tests that do not stop
// members share one single-member cluster, each under a prefix of its own.

var shared struct {
	once sync.Once
	c    *etcdtest.Cluster
	err  error
	dir  string
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.c != nil {
		shared.c.Stop()
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// sharedEtcd returns the package's single-member cluster, started on first
// use; t is skipped when etcd is not available.
func sharedEtcd(t *testing.T) *etcdtest.Cluster {
	t.Helper()
	bin := etcdtest.Need(t)
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "envlet-etcd-")
		if shared.err == nil {
			shared.c, shared.err = etcdtest.StartDir(bin, shared.dir, 1)
		}
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.c
}

// testPrefix is t's own prefix on the shared cluster: the same for every
// call in one run of t, a new one for each run (go test -count=N).
func testPrefix(t *testing.T) string {
	p, ok := prefixes.Load(t)
	if !ok {
		p, _ = prefixes.LoadOrStore(t, fmt.Sprintf("/t/%s/%d/", t.Name(), prefixN.Add(1)))
	}
	return p.(string)
}

var (
	prefixes sync.Map // *testing.T -> its prefix
	prefixN  atomic.Int64
)

func openEtcd(t *testing.T, c *etcdtest.Cluster, prefix string, keys *Keyring) *Etcd {
	t.Helper()
	e, err := OpenEtcd(EtcdConfig{Endpoints: c.Endpoints(), Prefix: prefix, Timeout: 2 * time.Second, ProbeInterval: 200 * time.Millisecond,
		CAFile: c.CAFile, CertFile: c.CertFile, KeyFile: c.KeyFile}, keys)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func mustCommit(t *testing.T, b Backend, txn Txn) Revision {
	t.Helper()
	rev, err := b.Commit(context.Background(), txn)
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	return rev
}

func mustSnapshot(t *testing.T, b Backend) Snapshot {
	t.Helper()
	s, err := b.Snapshot(context.Background())
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	return s
}

// records renders a snapshot's records without revisions.
func records(s Snapshot) string {
	var b strings.Builder
	for _, kv := range s.KVs {
		fmt.Fprintf(&b, "%s=%s\n", kv.Key, kv.Value)
	}
	return b.String()
}

func TestEtcdCommit(t *testing.T) {
	e := openEtcd(t, sharedEtcd(t), testPrefix(t), nil)
	r1 := mustCommit(t, e, Txn{Conds: []Cond{{Key: "a"}, {Key: "b"}}, Ops: []Op{put("a", "1"), put("b", "2")}})
	s := mustSnapshot(t, e)
	if got := records(s); got != "a=1\nb=2\n" || s.Rev < r1 || s.KVs[0].ModRev != r1 || s.KVs[1].ModRev != r1 {
		t.Fatalf("after create: %s", dump(s))
	}
	for _, tt := range []struct {
		name     string
		txn      Txn
		conflict bool
		want     string
	}{
		{"CreateExisting", Txn{Conds: []Cond{{Key: "a"}}, Ops: []Op{put("a", "x")}}, true, "a=1\nb=2\n"},
		{"StaleModRev", Txn{Conds: []Cond{{Key: "a", ModRev: r1 - 1}}, Ops: []Op{put("a", "x")}}, true, "a=1\nb=2\n"},
		{"OneCondFails", Txn{Conds: []Cond{{Key: "a", ModRev: r1}, {Key: "c", ModRev: 5}}, Ops: []Op{put("a", "x")}}, true, "a=1\nb=2\n"},
		{"Update", Txn{Conds: []Cond{{Key: "a", ModRev: r1}}, Ops: []Op{put("a", "3")}}, false, "a=3\nb=2\n"},
		{"DeleteAndCreate", Txn{Conds: []Cond{{Key: "b", ModRev: r1}, {Key: "c"}}, Ops: []Op{del("b"), put("c", "4")}}, false, "a=3\nc=4\n"},
		{"Unconditional", Txn{Ops: []Op{put("d", "5")}}, false, "a=3\nc=4\nd=5\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := mustSnapshot(t, e)
			rev, err := e.Commit(context.Background(), tt.txn)
			if tt.conflict != errors.Is(err, ErrConflict) || (!tt.conflict && err != nil) {
				t.Fatalf("Commit = %d, %v; want conflict %v", rev, err, tt.conflict)
			}
			after := mustSnapshot(t, e)
			if got := records(after); got != tt.want {
				t.Fatalf("records:\n%swant:\n%s", got, tt.want)
			}
			if !tt.conflict && (rev <= before.Rev || after.Rev < rev) {
				t.Fatalf("revision %d not after %d (now %d)", rev, before.Rev, after.Rev)
			}
		})
	}
	if _, err := e.Commit(context.Background(), Txn{Ops: []Op{{Key: ""}}}); err == nil {
		t.Fatal("empty key accepted")
	}
	var big Txn
	for i := 0; i < 200; i++ {
		big.Ops = append(big.Ops, put(fmt.Sprint("big", i), "x"))
	}
	if _, err := e.Commit(context.Background(), big); err == nil || !strings.Contains(err.Error(), "--max-txn-ops") || errors.Is(err, ErrUnavailable) {
		t.Fatalf("a transaction over etcd's limit: %v", err)
	}
}

// TestEtcdSnapshotPages reads more records than one range request returns.
func TestEtcdSnapshotPages(t *testing.T) {
	e := openEtcd(t, sharedEtcd(t), testPrefix(t), nil)
	const n = 2*snapshotPage + 37
	for i := 0; i < n; i += 100 {
		var txn Txn
		for j := i; j < min(i+100, n); j++ {
			txn.Ops = append(txn.Ops, put(fmt.Sprintf("k%05d", j), fmt.Sprint(j)))
		}
		mustCommit(t, e, txn)
	}
	s := mustSnapshot(t, e)
	if len(s.KVs) != n {
		t.Fatalf("%d records, want %d", len(s.KVs), n)
	}
	for i, kv := range s.KVs {
		if kv.Key != fmt.Sprintf("k%05d", i) || string(kv.Value) != fmt.Sprint(i) || kv.ModRev > s.Rev {
			t.Fatalf("record %d: %s=%s@%d (rev %d)", i, kv.Key, kv.Value, kv.ModRev, s.Rev)
		}
	}
}

// TestEtcdPrefixIsolation: a store sees only its own prefix.
func TestEtcdPrefixIsolation(t *testing.T) {
	c := sharedEtcd(t)
	a := openEtcd(t, c, testPrefix(t)+"a/", nil)
	b := openEtcd(t, c, testPrefix(t)+"ab/", nil)
	mustCommit(t, a, Txn{Ops: []Op{put("x", "a")}})
	mustCommit(t, b, Txn{Ops: []Op{put("x", "b")}})
	if got := records(mustSnapshot(t, a)); got != "x=a\n" {
		t.Fatalf("a sees %q", got)
	}
	if got := records(mustSnapshot(t, b)); got != "x=b\n" {
		t.Fatalf("b sees %q", got)
	}
}

// nextBatch reads one batch, failing after a generous limit (a guard
// against a hang, not a timing assertion).
func nextBatch(t *testing.T, ch <-chan Batch) Batch {
	t.Helper()
	select {
	case b, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return b
	case <-time.After(30 * time.Second):
		t.Fatal("no batch in 30 s")
	}
	return Batch{}
}

func batchText(b Batch) string {
	var s strings.Builder
	if b.Reset {
		return "reset"
	}
	for _, ev := range b.Events {
		if ev.Deleted {
			fmt.Fprintf(&s, "-%s ", ev.Key)
		} else {
			fmt.Fprintf(&s, "%s=%s ", ev.Key, ev.Value)
		}
	}
	return strings.TrimSpace(s.String())
}

func TestEtcdWatch(t *testing.T) {
	e := openEtcd(t, sharedEtcd(t), testPrefix(t), nil)
	other := openEtcd(t, sharedEtcd(t), "/t/"+t.Name()+"x/", nil) // a sibling prefix: not watched
	r0 := mustCommit(t, e, Txn{Ops: []Op{put("before", "0")}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := e.Watch(ctx, r0)
	var revs []Revision
	revs = append(revs, mustCommit(t, e, Txn{Ops: []Op{put("a", "1"), put("b", "2")}}))
	mustCommit(t, other, Txn{Ops: []Op{put("a", "other")}})
	revs = append(revs, mustCommit(t, e, Txn{Ops: []Op{del("a")}}))
	revs = append(revs, mustCommit(t, e, Txn{Ops: []Op{put("b", "3")}}))
	for i, want := range []string{"a=1 b=2", "-a", "b=3"} {
		b := nextBatch(t, ch)
		if got := batchText(b); got != want || b.Rev != revs[i] {
			t.Fatalf("batch %d = %q at %d, want %q at %d", i, got, b.Rev, want, revs[i])
		}
		for _, ev := range b.Events {
			if ev.ModRev != b.Rev {
				t.Fatalf("event %s at %d in batch %d", ev.Key, ev.ModRev, b.Rev)
			}
		}
	}
	// A second watcher from the start replays the same history.
	ch2 := e.Watch(ctx, r0)
	for i, want := range []string{"a=1 b=2", "-a", "b=3"} {
		if got := batchText(nextBatch(t, ch2)); got != want {
			t.Fatalf("replayed batch %d = %q, want %q", i, got, want)
		}
	}
	cancel()
	for range ch {
	}
}

// TestEtcdWatchCompacted: a watch from a revision etcd compacted away gets a
// Reset, then every batch after the compaction.
func TestEtcdWatchCompacted(t *testing.T) {
	e := openEtcd(t, sharedEtcd(t), testPrefix(t), nil)
	r0 := mustCommit(t, e, Txn{Ops: []Op{put("a", "0")}})
	var last Revision
	for i := 1; i <= 5; i++ {
		last = mustCommit(t, e, Txn{Ops: []Op{put("a", fmt.Sprint(i))}})
	}
	if err := e.Compact(context.Background(), last); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := e.Watch(ctx, r0)
	b := nextBatch(t, ch)
	if !b.Reset || b.Rev < r0 || b.Rev > last {
		t.Fatalf("first batch %q at %d, want a reset at the compaction (%d)", batchText(b), b.Rev, last)
	}
	s := mustSnapshot(t, e)
	if s.Rev < b.Rev || records(s) != "a=5\n" {
		t.Fatalf("snapshot after reset: %s", dump(s))
	}
	want := mustCommit(t, e, Txn{Ops: []Op{put("a", "6")}})
	for {
		b := nextBatch(t, ch)
		if b.Reset {
			t.Fatal("second reset")
		}
		if b.Rev <= s.Rev {
			continue // held by the snapshot already
		}
		if b.Rev != want || batchText(b) != "a=6" {
			t.Fatalf("after reset: %q at %d, want a=6 at %d", batchText(b), b.Rev, want)
		}
		break
	}
}

// TestEtcdRefusesUnsealed: with a key ring, a value that is not sealed with
// one of its keys never reaches etcd.
func TestEtcdRefusesUnsealed(t *testing.T) {
	c := sharedEtcd(t)
	keys := testKeys(t)
	e := openEtcd(t, c, testPrefix(t), keys)
	const canary = "canary-unsealed-51f0"
	if _, err := e.Commit(context.Background(), Txn{Ops: []Op{put("k", canary)}}); err == nil || strings.Contains(err.Error(), canary) {
		t.Fatalf("unsealed value: %v", err)
	}
	other := testKeys(t)
	if _, err := e.Commit(context.Background(), Txn{Ops: []Op{{Key: "k", Value: other.Seal(nil, []byte(canary), "k")}}}); err == nil {
		t.Fatal("a value sealed with a key outside the ring was accepted")
	}
	mustCommit(t, e, Txn{Ops: []Op{{Key: "k", Value: keys.Seal(nil, []byte(canary), "k")}}})
	out, err := c.Etcdctl("get", "--prefix", testPrefix(t))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, testPrefix(t)+"k") || strings.Contains(out, canary) {
		t.Fatalf("etcdctl get --prefix:\n%q", out)
	}
}

// TestEtcdUnavailable: with etcd down, every call fails with ErrUnavailable
// within the timeout, Health says so, and nothing is written.
func TestEtcdUnavailable(t *testing.T) {
	c := etcdtest.Start(t, 1)
	e := openEtcd(t, c, "/u/", nil)
	r := mustCommit(t, e, Txn{Ops: []Op{put("a", "1")}})
	waitHealth(t, e, true)
	c.Members[0].Kill()
	waitHealth(t, e, false)
	if _, err := e.Snapshot(context.Background()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Snapshot with etcd down: %v", err)
	}
	if _, err := e.Commit(context.Background(), Txn{Conds: []Cond{{Key: "a", ModRev: r}}, Ops: []Op{put("a", "2")}}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Commit with etcd down: %v", err)
	}
	before := e.Health().CurrentAt
	if before.IsZero() {
		t.Fatal("CurrentAt unset after a successful probe")
	}
	if err := c.Members[0].Start(); err != nil {
		t.Fatal(err)
	}
	waitHealth(t, e, true)
	if got := records(mustSnapshot(t, e)); got != "a=1\n" {
		t.Fatalf("after the outage: %q", got)
	}
	if !e.Health().CurrentAt.After(before) {
		t.Fatal("CurrentAt did not move after etcd came back")
	}
	// A canceled caller gets its own error, not ErrUnavailable.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.Commit(ctx, Txn{Ops: []Op{put("b", "1")}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled Commit: %v", err)
	}
}

func waitHealth(t *testing.T, e *Etcd, connected bool) {
	t.Helper()
	limit := time.Now().Add(30 * time.Second)
	for e.Health().Connected != connected {
		if time.Now().After(limit) {
			t.Fatalf("Health().Connected is not %v after 30 s", connected)
		}
		time.Sleep(20 * time.Millisecond) // polling the probe's flag
	}
}

// TestEtcdMembersDown: a three-member cluster goes on with one member down
// and refuses writes without a quorum; a watch sees every update, in order,
// through members being killed (its own connection, the leader) and coming
// back.
func TestEtcdMembersDown(t *testing.T) {
	c := etcdtest.Start(t, 3)
	e := openEtcd(t, c, "/m/", nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r0 := mustCommit(t, e, Txn{Ops: []Op{put("n", "0")}})
	ch := e.Watch(ctx, r0)
	var want []Revision
	n := 0
	write := func() {
		t.Helper()
		n++
		want = append(want, mustCommit(t, e, Txn{Ops: []Op{put("n", fmt.Sprint(n))}}))
	}
	for i := range c.Members {
		c.Members[i].Kill()
		// The others elect a new leader if it was this one; then writes go on.
		if err := c.WaitHealthy(60 * time.Second); err != nil {
			t.Fatal(err)
		}
		for j := 0; j < 5; j++ {
			write()
		}
		if err := c.Members[i].Start(); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitHealthy(60 * time.Second); err != nil {
			t.Fatal(err)
		}
		write()
	}
	// Two down: no quorum.
	c.Members[0].Kill()
	c.Members[1].Kill()
	waitHealth(t, e, false)
	if _, err := e.Commit(context.Background(), Txn{Ops: []Op{put("n", "lost")}}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Commit without quorum: %v", err)
	}
	for _, i := range []int{0, 1} {
		if err := c.Members[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitHealthy(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	write()
	for i, rev := range want {
		b := nextBatch(t, ch)
		if b.Reset || b.Rev != rev || batchText(b) != fmt.Sprintf("n=%d", i+1) {
			t.Fatalf("batch %d: %q at %d, want n=%d at %d", i, batchText(b), b.Rev, i+1, rev)
		}
	}
	if got := records(mustSnapshot(t, e)); got != fmt.Sprintf("n=%d\n", n) {
		t.Fatalf("final state %q, want n=%d (the write without quorum must not apply)", got, n)
	}
}

// TestEtcdTLS: a client certificate and the cluster's CA reach a TLS
// cluster; no client certificate does not.
func TestEtcdTLS(t *testing.T) {
	c := etcdtest.Start(t, 1, etcdtest.WithTLS())
	e := openEtcd(t, c, "/tls/", nil)
	mustCommit(t, e, Txn{Ops: []Op{put("a", "1")}})
	if got := records(mustSnapshot(t, e)); got != "a=1\n" {
		t.Fatalf("over TLS: %q", got)
	}
	noCert, err := OpenEtcd(EtcdConfig{Endpoints: c.Endpoints(), Prefix: "/tls/", CAFile: c.CAFile, Timeout: time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer noCert.Close()
	if _, err := noCert.Snapshot(context.Background()); err == nil {
		t.Fatal("a client without a certificate read the store")
	}
	if _, err := OpenEtcd(EtcdConfig{Endpoints: c.Endpoints(), Prefix: "/tls/", CAFile: filepath.Join(t.TempDir(), "missing.pem")}, nil); err == nil {
		t.Fatal("a missing CA file was accepted")
	}
}

func TestOpenEtcdConfig(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  EtcdConfig
	}{
		{"NoEndpoints", EtcdConfig{Prefix: "/p/"}},
		{"NoPrefix", EtcdConfig{Endpoints: []string{"http://127.0.0.1:1"}}},
		{"BadScheme", EtcdConfig{Endpoints: []string{"127.0.0.1:2379"}, Prefix: "/p/"}},
		{"CertWithoutKey", EtcdConfig{Endpoints: []string{"https://127.0.0.1:1"}, Prefix: "/p/", CertFile: "c.pem"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if e, err := OpenEtcd(tt.cfg, nil); err == nil {
				e.Close()
				t.Fatal("accepted")
			}
		})
	}
}

// TestLinkKnownDown: writes fail fast (nothing sent) only once every check
// has failed for a whole timeout, not on one failed probe (a dropped and
// remade connection, a busy machine); an older check that ends late does
// not undo what a newer one said.
func TestLinkKnownDown(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	type check struct {
		start time.Duration
		ok    bool
	}
	for _, tc := range []struct {
		name      string
		checks    []check // in the order they end
		now       time.Duration
		want      bool
		connected bool
	}{
		{"none yet", nil, time.Minute, false, false},
		{"last ok", []check{{0, false}, {time.Second, true}}, time.Minute, false, true},
		{"failing for a moment", []check{{0, true}, {time.Second, false}}, time.Second + 100*time.Millisecond, false, false},
		{"failing for just under the timeout", []check{{0, true}, {time.Second, false}, {2 * time.Second, false}}, 6*time.Second - 1, false, false},
		{"failing for the timeout", []check{{0, true}, {time.Second, false}, {2 * time.Second, false}}, 6 * time.Second, true, false},
		{"failing since the start", []check{{0, false}}, 5 * time.Second, true, false},
		{"a request went through after", []check{{0, false}, {6 * time.Second, true}}, time.Minute, false, true},
		{"an older probe ends late", []check{{6 * time.Second, true}, {0, false}}, time.Minute, false, true},
	} {
		var l link
		for _, c := range tc.checks {
			l.record(at(c.start), c.ok)
		}
		if got := l.knownDown(at(tc.now), 5*time.Second); got != tc.want || l.connected != tc.connected {
			t.Errorf("%s: knownDown %v connected %v, want %v %v", tc.name, got, l.connected, tc.want, tc.connected)
		}
	}
}
