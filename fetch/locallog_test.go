package fetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// logStore makes a store whose state file is at revision 2 and whose log
// holds revisions 3, 4 and 5, closes it, and returns its directory, the
// log's bytes, the offset of each record in the log, and the dump of the
// state after each revision.
func logStore(t *testing.T, keys *Keyring) (dir string, log []byte, offs []int, dumps map[Revision]string) {
	t.Helper()
	dir = t.TempDir()
	l, err := OpenLocal(dir, keys)
	if err != nil {
		t.Fatal(err)
	}
	dumps = map[Revision]string{}
	commit(t, l, Txn{Ops: []Op{put("a", "1"), put("b", "1")}})
	commit(t, l, Txn{Ops: []Op{put("c", "2")}})
	if err := l.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	dumps[2] = dump(snapshot(t, l))
	for _, txn := range []Txn{
		{Ops: []Op{put("a", "3"), del("b")}},
		{Ops: []Op{put("d", strings.Repeat("4", 300))}},
		{Ops: []Op{del("c"), put("e", "5")}},
	} {
		offs = append(offs, int(l.logSize))
		rev := commit(t, l, txn)
		dumps[rev] = dump(snapshot(t, l))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	log, err = os.ReadFile(filepath.Join(dir, logFileName))
	if err != nil {
		t.Fatal(err)
	}
	return dir, log, offs, dumps
}

// copyStore copies the state file of src into a new directory, with log
// as its log, and returns the directory.
func copyStore(t *testing.T, src string, log []byte) string {
	t.Helper()
	dir := t.TempDir()
	state, err := os.ReadFile(filepath.Join(src, stateFileName))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, stateFileName), state, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, logFileName), log, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestLocalLogReplay(t *testing.T) {
	keys := testKeys(t)
	dir, _, _, dumps := logStore(t, keys)
	l := openStore(t, dir, keys)
	if got := dump(snapshot(t, l)); got != dumps[5] {
		t.Fatalf("reopened:\n%s\nwant:\n%s", got, dumps[5])
	}
	if r := l.Recovery(); r.Replayed != 3 || r.TornBytes != 0 {
		t.Fatalf("recovery %+v, want 3 replayed", r)
	}
	// Commits go on after the replayed ones, and reopen again.
	commit(t, l, Txn{Ops: []Op{put("f", "6")}})
	reopenSame(t, l, dir, keys)
}

// TestLocalTornTail cuts the log at every byte of its last record, and
// damages each byte of it: the store opens without that batch (never
// acknowledged: a crash cut its write short), says so, cuts it off the log,
// and goes on from there.
func TestLocalTornTail(t *testing.T) {
	keys := testKeys(t)
	src, log, offs, dumps := logStore(t, keys)
	last := offs[len(offs)-1]
	check := func(t *testing.T, data []byte, torn int) {
		t.Helper()
		dir := copyStore(t, src, data)
		l, err := OpenLocal(dir, keys)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		defer l.Close()
		if got := dump(snapshot(t, l)); got != dumps[4] {
			t.Fatalf("opened:\n%s\nwant:\n%s", got, dumps[4])
		}
		if r := l.Recovery(); r.TornBytes != int64(torn) || r.Replayed != 2 {
			t.Fatalf("recovery %+v, want %d torn bytes and 2 replayed", r, torn)
		}
		if got, _ := os.ReadFile(filepath.Join(dir, logFileName)); !bytes.Equal(got, log[:last]) {
			t.Fatalf("log not cut back to its last whole record: %d bytes, want %d", len(got), last)
		}
		if rev := commit(t, l, Txn{Ops: []Op{put("z", "again")}}); rev != 5 {
			t.Fatalf("commit after the torn record: rev %d, want 5", rev)
		}
		l = reopenSame(t, l, dir, keys)
		if l.Recovery().TornBytes != 0 {
			t.Fatalf("reopened with %d torn bytes, want none", l.Recovery().TornBytes)
		}
	}
	for cut := last; cut < len(log); cut++ {
		t.Run(fmt.Sprintf("cut at %d", cut), func(t *testing.T) { check(t, log[:cut], cut-last) })
	}
	// The key id of the sealed record: damaged, it may name a key that the
	// ring lacks, which is refused wherever it is (the key ring file may
	// be out of date: the record may well be an acknowledged one).
	idFrom, idTo := last+recHeaderLen, last+recHeaderLen+1+len(keys.PrimaryID())
	for i := last; i < len(log); i++ {
		t.Run(fmt.Sprintf("byte %d flipped", i), func(t *testing.T) {
			data := bytes.Clone(log)
			data[i] ^= 0x01
			if i >= idFrom && i < idTo {
				dir := copyStore(t, src, data)
				l, err := OpenLocal(dir, keys)
				if err != nil {
					if !errors.Is(err, ErrUnknownKey) {
						t.Fatalf("open: %v", err)
					}
					return
				}
				l.Close()
			}
			check(t, data, len(log)-last)
		})
	}
	t.Run("zeros after the last record", func(t *testing.T) {
		// A file system that extended the file but never wrote the data.
		data := append(bytes.Clone(log[:last]), make([]byte, 4096)...)
		check(t, data, 4096)
	})
	t.Run("header cut short", func(t *testing.T) {
		for cut := range logHeaderLen {
			dir := copyStore(t, src, log[:cut])
			l := openStore(t, dir, keys)
			if got := dump(snapshot(t, l)); got != dumps[2] || l.Recovery().TornBytes != int64(cut) {
				t.Fatalf("log of %d bytes: %s %+v", cut, got, l.Recovery())
			}
			commit(t, l, Txn{Ops: []Op{put("z", "1")}})
			l.Close()
			l = openStore(t, dir, keys)
			if s := snapshot(t, l); s.Rev != 3 {
				t.Fatalf("log of %d bytes: reopened at %d after a commit", cut, s.Rev)
			}
			l.Close()
		}
	})
}

// TestLocalLogCorrupt checks that damage before the last record of the log,
// or a log that does not go with its state file, is refused with
// STORE_CORRUPT and leaves every file exactly as it was.
func TestLocalLogCorrupt(t *testing.T) {
	keys := testKeys(t)
	src, log, offs, _ := logStore(t, keys)
	flip := func(i int) []byte { b := bytes.Clone(log); b[i] ^= 0x80; return b }
	other := testKeys(t)
	// A record from another store of the same keys: revision 1.
	alien, _ := frameRecord(keys, encodeLogBody(nil, 1, []Event{{Key: "x", Value: []byte("y"), ModRev: 1}}))
	gap, _ := frameRecord(keys, encodeLogBody(nil, 9, []Event{{Key: "x", Value: []byte("y"), ModRev: 9}}))
	delAbsent, _ := frameRecord(keys, encodeLogBody(nil, 6, []Event{{Key: "nope", ModRev: 6, Deleted: true}}))
	foreign, _ := frameRecord(other, encodeLogBody(nil, 6, []Event{{Key: "x", Value: []byte("y"), ModRev: 6}}))
	garbled, _ := frameRecord(keys, []byte("not a record body"))
	for _, tt := range []struct {
		name string
		log  []byte
		want string
		is   error
	}{
		{"first record's body", flip(offs[0] + 30), "record 1 at byte 9 is damaged, and an intact record follows", ErrStoreCorrupt},
		{"first record's length", flip(offs[0] + 2), "record 1 at byte 9 is damaged", ErrStoreCorrupt},
		{"second record's tag", flip(offs[2] - 1), "record 2 at byte", ErrStoreCorrupt},
		{"a record cut out", slices.Concat(log[:offs[1]], log[offs[2]:]), "has revision 5 after 3", ErrStoreCorrupt},
		{"a record twice", slices.Concat(log[:offs[2]], log[offs[1]:]), "has revision 4 after 4", ErrStoreCorrupt},
		{"records older than the state file, then a gap", slices.Concat(log[:logHeaderLen], alien, gap), "has revision 9 after 1", ErrStoreCorrupt},
		{"a gap after the state file", slices.Concat(log[:logHeaderLen], gap), "the log goes on at revision 9 but the state file is at revision 2", ErrStoreCorrupt},
		{"a delete of an absent key", slices.Concat(log, delAbsent), "deletes nope", ErrStoreCorrupt},
		{"an authentic record that does not decode", slices.Concat(log, garbled), "record 4 at byte", ErrStoreCorrupt},
		{"a record sealed with a key the ring lacks", slices.Concat(log, foreign), other.PrimaryID(), ErrUnknownKey},
		{"not a log", []byte("ENVLETST\x01 and more"), "not an envlet log file", ErrStoreCorrupt},
		{"log format 2", slices.Concat([]byte(logMagic+"\x02"), log[logHeaderLen:]), "unsupported log format version 2", ErrStoreCorrupt},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyStore(t, src, tt.log)
			before := dirContent(t, dir)
			_, err := OpenLocal(dir, keys)
			if err == nil {
				t.Fatal("opened")
			}
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), filepath.Join(dir, logFileName)) {
				t.Fatalf("error %q, want %v naming the log and saying %q", err, tt.is, tt.want)
			}
			if tt.is == ErrStoreCorrupt && !strings.Contains(err.Error(), "STORE_CORRUPT") {
				t.Fatalf("error %q without its code", err)
			}
			if after := dirContent(t, dir); after != before {
				t.Fatal("a refused open changed the store's files")
			}
			// A failed open releases the directory.
			os.Remove(filepath.Join(dir, logFileName))
			openStore(t, dir, keys).Close()
		})
	}
	// The state file gone, the log from revision 3: refused, not opened
	// as revisions 3 to 5 alone.
	dir := copyStore(t, src, log)
	os.Remove(filepath.Join(dir, stateFileName))
	if _, err := OpenLocal(dir, keys); !errors.Is(err, ErrStoreCorrupt) {
		t.Fatalf("log without its state file: %v", err)
	}
}

// TestLocalCompaction commits until the log crosses the threshold, and
// checks that it is compacted then and only then, and that the store
// reopens the same after it.
func TestLocalCompaction(t *testing.T) {
	keys := testKeys(t)
	dir := t.TempDir()
	l := openStore(t, dir, keys)
	l.compactMin = 2048
	statePath := filepath.Join(dir, stateFileName)
	logSize := func() int64 {
		fi, err := os.Stat(filepath.Join(dir, logFileName))
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	val := strings.Repeat("v", 200)
	compactions := 0
	for i := range 100 {
		prev := int64(logHeaderLen)
		if i > 0 {
			prev = logSize()
		}
		threshold := max(l.compactMin, l.stateSize)
		rev := commit(t, l, Txn{Ops: []Op{put(fmt.Sprintf("k%03d", i%40), val), put("i", fmt.Sprint(i))}})
		size := logSize()
		if size == int64(logHeaderLen) {
			// Compacted by this commit: its record took the log past the
			// threshold (a record is under 400 bytes).
			compactions++
			if prev-int64(logHeaderLen)+400 <= threshold {
				t.Fatalf("commit %d: compacted a log of %d bytes, under the threshold %d", i, prev, threshold)
			}
			st, err := os.ReadFile(statePath)
			if err != nil {
				t.Fatal(err)
			}
			if s, err := decodeStateFile(keys, st); err != nil || s.rev != rev {
				t.Fatalf("state file after compaction at %d: %v", rev, err)
			}
		} else if size-int64(logHeaderLen) > threshold {
			t.Fatalf("commit %d: log of %d bytes past the threshold %d, not compacted", i, size, threshold)
		}
		if i%17 == 0 {
			l = reopenSame(t, l, dir, keys)
			l.compactMin = 2048
		}
	}
	if compactions < 3 {
		t.Fatalf("%d compactions in 100 commits of 200 bytes with a threshold of 2 KiB", compactions)
	}
}

// TestLocalLogBroken: after an append failed in a way that leaves the log
// in doubt, the next commit writes the whole state and starts a new log.
func TestLocalLogBroken(t *testing.T) {
	keys := testKeys(t)
	dir := t.TempDir()
	l := openStore(t, dir, keys)
	commit(t, l, Txn{Ops: []Op{put("a", "1")}})
	l.logBroken = true
	commit(t, l, Txn{Ops: []Op{put("b", "2")}})
	if l.logBroken || l.logSize != int64(logHeaderLen) || l.stateSize == 0 {
		t.Fatalf("after a commit on a broken log: broken %v, log %d, state %d", l.logBroken, l.logSize, l.stateSize)
	}
	commit(t, l, Txn{Ops: []Op{put("c", "3")}})
	reopenSame(t, l, dir, keys)
}

// TestLocalResealCompacts rotates the key of a store whose state file and
// log were sealed with the old one: after Reseal nothing in the directory is
// sealed with the old key, and the store opens with the new key alone.
func TestLocalResealCompacts(t *testing.T) {
	keyPath := filepath.Join(t.TempDir(), "key")
	old, err := LoadKeyring(keyPath, true)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	l := openStore(t, dir, old)
	for i := range 10 {
		k := fmt.Sprintf("r%d", i)
		commit(t, l, Txn{Ops: []Op{{Key: k, Value: old.Seal(nil, []byte("value-"+k), k)}}})
		if i == 4 {
			if err := l.Compact(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	oldID := old.PrimaryID()
	newID, err := AddKey(keyPath, true)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := LoadKeyring(keyPath, false)
	if err != nil {
		t.Fatal(err)
	}
	old.Replace(ring) // as the agent does when the key file changes
	res, err := Reseal(context.Background(), l, old)
	if err != nil || res.Resealed != 10 {
		t.Fatalf("reseal: %+v %v", res, err)
	}
	l.Close()
	if err := RemoveKey(keyPath, oldID); err != nil {
		t.Fatal(err)
	}
	only, err := LoadKeyring(keyPath, false)
	if err != nil || !slices.Equal(only.IDs(), []string{newID}) {
		t.Fatalf("after RemoveKey: %v %v", only.IDs(), err)
	}
	state, _ := os.ReadFile(filepath.Join(dir, stateFileName))
	if id, _ := SealedKeyID(state[len(stateMagic)+1:]); id != newID {
		t.Fatalf("state file sealed with %q, want %s", id, newID)
	}
	if log, _ := os.ReadFile(filepath.Join(dir, logFileName)); len(log) != logHeaderLen {
		t.Fatalf("log of %d bytes after reseal, want it empty", len(log))
	}
	l = openStore(t, dir, only)
	s := snapshot(t, l)
	for _, kv := range s.KVs {
		if p, err := only.Open(nil, kv.Value, kv.Key); err != nil || string(p) != "value-"+kv.Key {
			t.Fatalf("%s after reseal: %v", kv.Key, err)
		}
	}
	// Reseal of a store where everything is under the primary already
	// still compacts: a log record sealed before is rewritten.
	if err := l.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestLocalModel commits random batches (puts, deletes, conditions) and
// checks the store against a map after each, across runs of the in-memory
// state that split and empty, compactions and reopens.
func TestLocalModel(t *testing.T) {
	keys := testKeys(t)
	dir := t.TempDir()
	l := openStore(t, dir, keys)
	l.compactMin = 64 << 10
	rng := rand.New(rand.NewPCG(1, 2))
	model := map[string]KV{}
	var rev Revision
	for i := range 600 {
		var ops []Op
		seen := map[string]bool{}
		n := 1 + rng.IntN(8)
		if i%50 == 0 {
			n = 700 // more than a run holds
		}
		for range n {
			k := fmt.Sprintf("k%04d", rng.IntN(3000))
			if seen[k] {
				continue
			}
			seen[k] = true
			if rng.IntN(3) == 0 {
				ops = append(ops, del(k))
			} else {
				ops = append(ops, put(k, fmt.Sprint(i)))
			}
		}
		changed := false
		for _, op := range ops {
			if _, ok := model[op.Key]; ok || !op.Delete {
				changed = true
			}
		}
		got := commit(t, l, Txn{Ops: ops})
		if changed {
			rev++
			for _, op := range ops {
				if op.Delete {
					delete(model, op.Key)
				} else {
					model[op.Key] = KV{Key: op.Key, Value: op.Value, ModRev: rev}
				}
			}
		}
		if got != rev {
			t.Fatalf("commit %d: rev %d, want %d", i, got, rev)
		}
		if i%37 == 0 {
			l.Close()
			l = openStore(t, dir, keys)
			l.compactMin = 64 << 10
		}
		s := snapshot(t, l)
		if len(s.KVs) != len(model) || s.Rev != rev {
			t.Fatalf("commit %d: %d records at %d, want %d at %d", i, len(s.KVs), s.Rev, len(model), rev)
		}
		for j, kv := range s.KVs {
			m := model[kv.Key]
			if j > 0 && s.KVs[j-1].Key >= kv.Key || m.ModRev != kv.ModRev || !bytes.Equal(m.Value, kv.Value) {
				t.Fatalf("commit %d: record %d %s@%d differs from the model", i, j, kv.Key, kv.ModRev)
			}
			if g, ok := l.st.get(kv.Key); !ok || g.ModRev != kv.ModRev {
				t.Fatalf("commit %d: get %s", i, kv.Key)
			}
		}
		for _, c := range l.st.chunks {
			if len(c) == 0 || len(c) > chunkMax {
				t.Fatalf("commit %d: a run of %d records", i, len(c))
			}
		}
	}
}

// reopenSame closes l, opens the store in dir again and fails unless it
// holds what l held.
func reopenSame(t *testing.T, l *Local, dir string, keys *Keyring) *Local {
	t.Helper()
	want := dump(snapshot(t, l))
	l.Close()
	l = openStore(t, dir, keys)
	if got := dump(snapshot(t, l)); got != want {
		t.Fatalf("reopened:\n%s\nwant:\n%s", got, want)
	}
	return l
}
