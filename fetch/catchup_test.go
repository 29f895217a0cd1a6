package fetch

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestMirrorRestartCatchesUp: a mirror restarted beside its snapshot file
// replays only etcd's history since the file's revision (no whole read of
// the prefix) and holds exactly what a whole read holds: writes, deletes,
// writes outside the prefix, nothing changed at all; when etcd compacted
// past the file's revision, it reads the whole prefix, with the same
// result.
func TestMirrorRestartCatchesUp(t *testing.T) {
	c := sharedEtcd(t)
	keys := testKeys(t)
	prefix := testPrefix(t)
	path := filepath.Join(t.TempDir(), SnapshotFileName)
	ident := "etcd " + prefix
	other := openEtcd(t, c, prefix, keys)
	elsewhere := openEtcd(t, c, strings.TrimSuffix(prefix, "/")+"-other/", keys)

	m1 := NewMirror(openEtcd(t, c, prefix, keys), path, ident, keys)
	mustCommit(t, m1, Txn{Ops: []Op{sealedPut(keys, "a", "1"), sealedPut(keys, "b", "2"), sealedPut(keys, "c", "3")}})
	mustSnapshot(t, m1)
	if err := m1.Close(); err != nil { // writes the file
		t.Fatal(err)
	}

	restart := func(what string, wantCatchUp bool) {
		t.Helper()
		want := opened(t, keys, mustSnapshot(t, other))
		top := mustCommit(t, elsewhere, Txn{Ops: []Op{sealedPut(keys, "z", what)}})
		m := NewMirror(openEtcd(t, c, prefix, keys), path, ident, keys)
		s := mustSnapshot(t, m)
		if got := opened(t, keys, s); got != want {
			t.Fatalf("%s: mirror holds\n%s\nwant\n%s", what, got, want)
		}
		if s.Rev < top {
			t.Fatalf("%s: at revision %d, etcd was at %d", what, s.Rev, top)
		}
		if c, f := m.catchUps.Load(), m.fullReads.Load(); wantCatchUp && (c != 1 || f != 0) || !wantCatchUp && (c != 0 || f != 1) {
			t.Fatalf("%s: %d catch-ups, %d whole reads; want a catch-up: %v", what, c, f, wantCatchUp)
		}
		// It goes on from there like any mirror: the watch brings the next
		// change, and Close writes the file for the next restart.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ch := m.Watch(ctx, s.Rev)
		r := mustCommit(t, other, Txn{Ops: []Op{sealedPut(keys, "w", what)}})
		for b := nextBatch(t, ch); b.Rev < r; b = nextBatch(t, ch) {
		}
		cancel()
		m.save(true)
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// Nothing changed under the prefix (a write elsewhere only).
	restart("unchanged", true)
	// Writes while it was down: a new record and an overwrite.
	mustCommit(t, other, Txn{Ops: []Op{sealedPut(keys, "a", "1b"), sealedPut(keys, "d", "4")}})
	restart("written", true)
	// Deletes, one with a new key that keeps the count the same.
	mustCommit(t, other, Txn{Ops: []Op{{Key: "b", Delete: true}, sealedPut(keys, "f", "6")}})
	mustCommit(t, other, Txn{Ops: []Op{{Key: "c", Delete: true}}})
	restart("deleted", true)
	// etcd compacted past the file's revision: a whole read.
	mustCommit(t, other, Txn{Ops: []Op{sealedPut(keys, "e", "5")}})
	top := mustCommit(t, elsewhere, Txn{Ops: []Op{sealedPut(keys, "y", "8")}})
	if err := other.Compact(context.Background(), top); err != nil {
		t.Fatal(err)
	}
	restart("compacted", false)
}
