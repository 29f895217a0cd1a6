package fetch

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envlet/envlet/internal/etcdtest"
)

// sealedPut is a put of value sealed as the agent seals records.
func sealedPut(k *Keyring, key, value string) Op {
	return Op{Key: key, Value: k.Seal(nil, []byte(value), key)}
}

// opened renders a snapshot's records with their values opened.
func opened(t *testing.T, k *Keyring, s Snapshot) string {
	t.Helper()
	var b strings.Builder
	for _, kv := range s.KVs {
		p, err := k.Open(nil, kv.Value, kv.Key)
		if err != nil {
			t.Fatalf("open %s: %v", kv.Key, err)
		}
		b.WriteString(kv.Key + "=" + string(p) + "\n")
	}
	return b.String()
}

// TestMirrorServesThroughOutage: a mirror restarted while etcd is down
// serves its snapshot file, says it is stale, and catches up (a Reset and a
// fresh read) when etcd is back.
func TestMirrorServesThroughOutage(t *testing.T) {
	c := etcdtest.Start(t, 1)
	keys := testKeys(t)
	path := filepath.Join(t.TempDir(), SnapshotFileName)
	const canary = "canary-mirror-0c9e"

	m1 := NewMirror(openEtcd(t, c, "/mirror/", keys), path, "etcd /mirror/", keys)
	mustCommit(t, m1, Txn{Ops: []Op{sealedPut(keys, "a", canary), sealedPut(keys, "b", "2")}})
	s1 := mustSnapshot(t, m1)
	if st := m1.Status(); !st.Connected || st.FromSnapshot || st.Rev != s1.Rev {
		t.Fatalf("live mirror status %+v", st)
	}
	if err := m1.Close(); err != nil { // writes the file
		t.Fatal(err)
	}
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("snapshot file mode %v", fi.Mode())
	}
	for _, clear := range []string{canary, "/mirror/", "etcd "} {
		if bytes.Contains(file, []byte(clear)) {
			t.Fatalf("snapshot file holds %q in clear", clear)
		}
	}
	// A write this mirror does not see, then etcd goes away.
	other := openEtcd(t, c, "/mirror/", keys)
	mustCommit(t, other, Txn{Ops: []Op{sealedPut(keys, "c", "3")}})
	c.Members[0].Kill()

	m2 := NewMirror(openEtcd(t, c, "/mirror/", keys), path, "etcd /mirror/", keys)
	defer m2.Close()
	s2 := mustSnapshot(t, m2)
	if got := opened(t, keys, s2); got != "a="+canary+"\nb=2\n" || s2.Rev != s1.Rev {
		t.Fatalf("served from the file: rev %d (want %d)\n%s", s2.Rev, s1.Rev, got)
	}
	st := m2.Status()
	if st.Connected || !st.FromSnapshot || st.CurrentAt.IsZero() || time.Since(st.CurrentAt) < 0 {
		t.Fatalf("degraded status %+v", st)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := m2.Watch(ctx, s2.Rev)
	if err := c.Members[0].Start(); err != nil {
		t.Fatal(err)
	}
	b := nextBatch(t, ch)
	if !b.Reset {
		t.Fatalf("first batch after the outage %q, want a reset", batchText(b))
	}
	s3 := mustSnapshot(t, m2)
	if got := opened(t, keys, s3); got != "a="+canary+"\nb=2\nc=3\n" || s3.Rev < b.Rev {
		t.Fatalf("after the outage: rev %d\n%s", s3.Rev, got)
	}
	// A client of its own for the write: other's connection may still be
	// in its reconnect backoff from the outage, which is not under test.
	writer := openEtcd(t, c, "/mirror/", keys)
	r := mustCommit(t, writer, Txn{Ops: []Op{{Key: "b", Delete: true}}})
	for {
		b := nextBatch(t, ch)
		if b.Rev <= s3.Rev {
			continue
		}
		if b.Rev != r || batchText(b) != "-b" {
			t.Fatalf("batch %q at %d, want -b at %d", batchText(b), b.Rev, r)
		}
		break
	}
	if st := m2.Status(); !st.FromSnapshot && st.Rev != r {
		t.Fatalf("status after catching up %+v", st)
	}
}

// TestMirrorFileRefused: a snapshot file of another store, one that does
// not open with the key ring, or none at all: the mirror does not serve.
func TestMirrorFileRefused(t *testing.T) {
	c := etcdtest.Start(t, 1)
	keys := testKeys(t)
	dir := t.TempDir()
	path := filepath.Join(dir, SnapshotFileName)
	m := NewMirror(openEtcd(t, c, "/a/", keys), path, "etcd /a/", keys)
	mustCommit(t, m, Txn{Ops: []Op{sealedPut(keys, "k", "v")}})
	mustSnapshot(t, m)
	m.Close()
	c.Members[0].Kill()
	for _, tt := range []struct {
		name, path, ident string
		keys              *Keyring
		want              string
	}{
		{"OtherStore", path, "etcd /b/", keys, "another store"},
		{"OtherKeys", path, "etcd /a/", testKeys(t), "not in the key ring"},
		{"NoFile", filepath.Join(dir, "none.enc"), "etcd /a/", keys, "no snapshot file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := NewMirror(openEtcd(t, c, "/a/", tt.keys), tt.path, tt.ident, tt.keys)
			defer m.Close()
			_, err := m.Snapshot(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Snapshot: %v; want an error with %q", err, tt.want)
			}
		})
	}
}

// TestMirrorFollowsWatch: the file follows the watch (rate-limited), and
// Status names key ids that sealed records but are not in the ring.
func TestMirrorFollowsWatch(t *testing.T) {
	c := sharedEtcd(t)
	keys := testKeys(t)
	path := filepath.Join(t.TempDir(), SnapshotFileName)
	m := NewMirror(openEtcd(t, c, testPrefix(t), keys), path, "etcd x", keys)
	defer m.Close()
	s := mustSnapshot(t, m)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := m.Watch(ctx, s.Rev)
	r := mustCommit(t, m, Txn{Ops: []Op{sealedPut(keys, "x", "1")}})
	for b := nextBatch(t, ch); b.Rev < r; b = nextBatch(t, ch) {
	}
	// A record sealed by a key this ring lacks (another node rotated first).
	newer := testKeys(t)
	raw := openEtcd(t, c, testPrefix(t), nil)
	r2 := mustCommit(t, raw, Txn{Ops: []Op{sealedPut(newer, "y", "2")}})
	for b := nextBatch(t, ch); b.Rev < r2; b = nextBatch(t, ch) {
	}
	if st := m.Status(); !slices.Equal(st.UnknownKeyIDs, []string{newer.PrimaryID()}) {
		t.Fatalf("unknown key ids %v, want [%s]", st.UnknownKeyIDs, newer.PrimaryID())
	}
	m.save(false)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ident, _, st, err := decodeSnapshotFile(keys, data)
	if err != nil || ident != "etcd x" || st.rev != r2 || st.n != 2 {
		t.Fatalf("file: %q rev %d, %d records, %v", ident, st.rev, st.n, err)
	}
}

// TestReseal re-encrypts every record under a new primary while a writer
// keeps writing, through a real etcd.
func TestReseal(t *testing.T) {
	c := sharedEtcd(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "keyring")
	old, err := LoadKeyring(path, true)
	if err != nil {
		t.Fatal(err)
	}
	e := openEtcd(t, c, testPrefix(t), nil)
	want := map[string]string{}
	for i := 0; i < 50; i++ {
		k := "r" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		want[k] = "value-" + k
		mustCommit(t, e, Txn{Ops: []Op{sealedPut(old, k, want[k])}})
	}
	newID, err := AddKey(path, true)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := LoadKeyring(path, false)
	if err != nil || ring.PrimaryID() != newID || !ring.Has(old.PrimaryID()) {
		t.Fatalf("after AddKey: %v %v", ring.IDs(), err)
	}
	// A writer with the new ring changes records during the reseal.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			e.Commit(context.Background(), Txn{Ops: []Op{sealedPut(ring, "raa", "value-raa")}})
		}
	}()
	res, err := Reseal(context.Background(), e, ring)
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if res.Records != 50 || res.Resealed == 0 {
		t.Fatalf("reseal %+v", res)
	}
	// Everything opens with the new key alone.
	if err := RemoveKey(path, old.PrimaryID()); err != nil {
		t.Fatal(err)
	}
	only, err := LoadKeyring(path, false)
	if err != nil || len(only.IDs()) != 1 {
		t.Fatalf("after RemoveKey: %v", err)
	}
	s := mustSnapshot(t, e)
	for _, kv := range s.KVs {
		p, err := only.Open(nil, kv.Value, kv.Key)
		if err != nil || string(p) != want[kv.Key] {
			t.Fatalf("%s after reseal: %q %v", kv.Key, p, err)
		}
	}
	// A ring that lacks the key of a record: Reseal stops, naming it.
	mustCommit(t, e, Txn{Ops: []Op{sealedPut(testKeys(t), "stranger", "x")}})
	if _, err := Reseal(context.Background(), e, only); err == nil || !strings.Contains(err.Error(), "stranger") {
		t.Fatalf("reseal of a record with an unknown key: %v", err)
	}
}
