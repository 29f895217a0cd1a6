package fetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func testKeys(t testing.TB) *Keyring {
	t.Helper()
	k, err := LoadKeyring(filepath.Join(t.TempDir(), "key"), true)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func openStore(t testing.TB, dir string, keys *Keyring) *Local {
	t.Helper()
	l, err := OpenLocal(dir, keys)
	if err != nil {
		t.Fatalf("OpenLocal: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func put(key, value string) Op { return Op{Key: key, Value: []byte(value)} }
func del(key string) Op        { return Op{Key: key, Delete: true} }

func commit(t testing.TB, l *Local, txn Txn) Revision {
	t.Helper()
	rev, err := l.Commit(context.Background(), txn)
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	return rev
}

func snapshot(t testing.TB, l *Local) Snapshot {
	t.Helper()
	s, err := l.Snapshot(context.Background())
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	return s
}

// dump renders a snapshot as "key=value@modrev" lines for comparison.
func dump(s Snapshot) string {
	var b strings.Builder
	fmt.Fprintf(&b, "rev %d\n", s.Rev)
	for _, kv := range s.KVs {
		fmt.Fprintf(&b, "%s=%s@%d\n", kv.Key, kv.Value, kv.ModRev)
	}
	return b.String()
}

func TestLocalCommit(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := openStore(t, dir, testKeys(t))
	if s := snapshot(t, l); s.Rev != 0 || len(s.KVs) != 0 {
		t.Fatalf("new store: %s", dump(s))
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{lockFileName}) {
		t.Fatalf("opening an empty store wrote %v", names)
	}
	// An empty Txn returns the current revision and writes nothing.
	if rev := commit(t, l, Txn{}); rev != 0 {
		t.Fatalf("empty txn rev %d", rev)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{lockFileName}) {
		t.Fatalf("an empty txn wrote %v", names)
	}

	if rev := commit(t, l, Txn{Conds: []Cond{{Key: "b", ModRev: 0}}, Ops: []Op{put("b", "1"), put("a", "1")}}); rev != 1 {
		t.Fatalf("first commit rev %d", rev)
	}
	if rev := commit(t, l, Txn{Conds: []Cond{{Key: "b", ModRev: 1}}, Ops: []Op{put("b", "2"), put("c", "2")}}); rev != 2 {
		t.Fatalf("second commit rev %d", rev)
	}
	want := "rev 2\na=1@1\nb=2@2\nc=2@2\n"
	if got := dump(snapshot(t, l)); got != want {
		t.Fatalf("snapshot:\n%s\nwant:\n%s", got, want)
	}

	for _, tt := range []struct {
		name string
		cond Cond
	}{
		{"absent but exists", Cond{Key: "a", ModRev: 0}},
		{"stale modrev", Cond{Key: "b", ModRev: 1}},
		{"missing key", Cond{Key: "zz", ModRev: 2}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := dirContent(t, dir)
			_, err := l.Commit(ctx, Txn{Conds: []Cond{{Key: "a", ModRev: 1}, tt.cond}, Ops: []Op{put("a", "X"), del("c")}})
			if !errors.Is(err, ErrConflict) {
				t.Fatalf("err = %v, want ErrConflict", err)
			}
			if got := dump(snapshot(t, l)); got != want {
				t.Fatalf("conflict changed the state:\n%s", got)
			}
			if after := dirContent(t, dir); after != before {
				t.Fatal("conflict wrote to the store's files")
			}
		})
	}

	// Deleting an absent key alone changes nothing.
	if rev := commit(t, l, Txn{Ops: []Op{del("nope")}}); rev != 2 {
		t.Fatalf("no-op delete rev %d, want 2", rev)
	}
	// A delete and a put in one txn; the absent delete is no event.
	if rev := commit(t, l, Txn{Ops: []Op{del("a"), del("nope"), put("d", "3")}}); rev != 3 {
		t.Fatalf("rev %d, want 3", rev)
	}
	want = "rev 3\nb=2@2\nc=2@2\nd=3@3\n"
	if got := dump(snapshot(t, l)); got != want {
		t.Fatalf("snapshot:\n%s\nwant:\n%s", got, want)
	}

	for _, bad := range []Txn{
		{Ops: []Op{put("", "x")}},
		{Ops: []Op{put("k", "1"), del("k")}},
		{Ops: []Op{put(strings.Repeat("k", MaxKeyLen+1), "x")}},
	} {
		if _, err := l.Commit(ctx, bad); err == nil {
			t.Errorf("invalid txn %v accepted", bad.Ops[0].Key[:min(len(bad.Ops[0].Key), 8)])
		}
	}
	if got := dump(snapshot(t, l)); got != want {
		t.Fatalf("invalid txns changed the state:\n%s", got)
	}
}

func TestLocalCommitCopiesValues(t *testing.T) {
	l := openStore(t, t.TempDir(), testKeys(t))
	v := []byte("orig")
	commit(t, l, Txn{Ops: []Op{{Key: "k", Value: v}}})
	copy(v, "XXXX")
	if got := snapshot(t, l).KVs[0].Value; string(got) != "orig" {
		t.Fatalf("store aliases the caller's value: %q", got)
	}
	s := snapshot(t, l)
	s.KVs[0] = KV{Key: "mutated"}
	if got := snapshot(t, l).KVs[0].Key; got != "k" {
		t.Fatal("Snapshot shares its KVs slice")
	}
}

func TestLocalReopen(t *testing.T) {
	dir := t.TempDir()
	keys := testKeys(t)
	l, err := OpenLocal(dir, keys)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		commit(t, l, Txn{Ops: []Op{put(fmt.Sprintf("k%d", i), fmt.Sprint(i))}})
	}
	commit(t, l, Txn{Ops: []Op{del("k0")}})
	want := dump(snapshot(t, l))
	// A second process (or open) is kept out while the store is open.
	if _, err := OpenLocal(dir, keys); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second OpenLocal: %v, want in use", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := l.Commit(context.Background(), Txn{Ops: []Op{put("x", "y")}}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Commit after Close: %v", err)
	}
	if _, err := l.Snapshot(context.Background()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Snapshot after Close: %v", err)
	}
	if _, ok := <-l.Watch(context.Background(), 0); ok {
		t.Fatal("Watch after Close delivered a batch")
	}

	// A crash's leftover temp file goes away on open.
	leftover := filepath.Join(dir, stateTempPfx+"123")
	os.WriteFile(leftover, []byte("partial"), 0o600)

	l2 := openStore(t, dir, keys)
	if got := dump(snapshot(t, l2)); got != want {
		t.Fatalf("reopened:\n%s\nwant:\n%s", got, want)
	}
	if _, err := os.Stat(leftover); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("leftover temp file not removed")
	}
	if rev := commit(t, l2, Txn{Ops: []Op{put("after", "reopen")}}); rev != 7 {
		t.Fatalf("revision after reopen %d, want 7", rev)
	}
	// The ring starts empty after a reopen: an old watcher is told to reset.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := <-l2.Watch(ctx, 3)
	if !b.Reset || b.Rev != 7 || len(b.Events) != 0 {
		t.Fatalf("watch from before the reopen: %+v, want Reset at 7", b)
	}
	// Other keys do not open it.
	l2.Close()
	if _, err := OpenLocal(dir, testKeys(t)); err == nil {
		t.Fatal("store opened with another key ring")
	}
}

// TestLocalCorrupt checks that a state file that does not load is refused
// and left exactly as it was.
func TestLocalCorrupt(t *testing.T) {
	keys := testKeys(t)
	src := t.TempDir()
	l, err := OpenLocal(src, keys)
	if err != nil {
		t.Fatal(err)
	}
	commit(t, l, Txn{Ops: []Op{put("a", "1"), put("b", "2")}})
	if err := l.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	l.Close()
	good, err := os.ReadFile(filepath.Join(src, stateFileName))
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte { b := bytes.Clone(good); b[i] ^= 0x80; return b }
	for _, tt := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "not an envlet state file"},
		{"bad magic", flip(0), "not an envlet state file"},
		{"version 2", append(append([]byte(stateMagic), 2), good[9:]...), "unsupported format version 2"},
		{"truncated", good[:len(good)-1], "decrypt"},
		{"flipped key id", flip(10), "decrypt"},
		{"flipped nonce", flip(9 + 1 + len(keys.PrimaryID()) + 2), "decrypt"},
		{"flipped payload", flip(len(good) - 20), "decrypt"},
		{"flipped tag", flip(len(good) - 1), "decrypt"},
		{"sealed with other aad", append([]byte(stateMagic+"\x01"), keys.Seal(nil, encodePayload(&state{rev: 1}), "other")...), "decrypt"},
		{"bad payload", append([]byte(stateMagic+"\x01"), keys.Seal(nil, []byte("short"), stateAAD)...), "truncated"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, stateFileName)
			if err := os.WriteFile(path, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := OpenLocal(dir, keys)
			if err == nil {
				t.Fatal("corrupt state file accepted")
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) {
				t.Errorf("error %q, want it to name %s and say %q", err, path, tt.want)
			}
			if got, _ := os.ReadFile(path); !bytes.Equal(got, tt.data) {
				t.Fatal("corrupt state file was changed")
			}
			// A failed open releases the directory.
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			l := openStore(t, dir, keys)
			l.Close()
		})
	}
}

// TestLocalNoPlaintext plants canary values, sealed as the agent seals them,
// and checks that neither they nor the record keys nor the key ring's key
// appear anywhere in the state directory.
func TestLocalNoPlaintext(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(t.TempDir(), "key")
	keys, err := LoadKeyring(keyPath, true)
	if err != nil {
		t.Fatal(err)
	}
	l := openStore(t, dir, keys)
	var needles [][]byte
	for i := range 20 {
		key := fmt.Sprintf("s/p/canaryproject%02d/CANARYNAME%02d", i, i)
		value := fmt.Sprintf("CANARY-VALUE-%02d-7d1e0a", i)
		sealed := keys.Seal(nil, []byte(value), key)
		commit(t, l, Txn{Ops: []Op{{Key: key, Value: sealed}}})
		needles = append(needles, []byte(key), []byte(value), []byte(fmt.Sprintf("CANARYNAME%02d", i)))
	}
	keyFile, _ := os.ReadFile(keyPath)
	for _, line := range strings.Split(string(keyFile), "\n") {
		if f := strings.Fields(line); len(f) == 2 && !strings.HasPrefix(line, "#") {
			needles = append(needles, []byte(f[1]))
			raw, err := decodeKey(f[1])
			if err != nil {
				t.Fatal(err)
			}
			needles = append(needles, raw)
		}
	}
	needles = append(needles, []byte("canaryproject"), []byte("CANARY"))
	scan := func() {
		files := 0
		filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			files++
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range needles {
				if bytes.Contains(data, n) {
					t.Errorf("%s holds %q in clear", path, n)
				}
			}
			return nil
		})
		if files == 0 {
			t.Fatal("no files in the state directory")
		}
	}
	scan() // the commits in the log
	if err := l.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	scan() // the state file
	commit(t, l, Txn{Ops: []Op{{Key: "s/p/canaryproject00/CANARYNAME00", Value: keys.Seal(nil, []byte("CANARY-VALUE-00-7d1e0a"), "s/p/canaryproject00/CANARYNAME00")}}})
	commit(t, l, Txn{Ops: []Op{del("s/p/canaryproject01/CANARYNAME01")}})
	scan() // both
	// And the agent's view: every value opens under its own key only.
	s := snapshot(t, l)
	for _, kv := range s.KVs {
		if _, err := keys.Open(nil, kv.Value, kv.Key); err != nil {
			t.Fatalf("open %s: %v", kv.Key, err)
		}
		if _, err := keys.Open(nil, kv.Value, kv.Key+"x"); err == nil {
			t.Fatalf("value of %s opens under another key", kv.Key)
		}
	}
}

func TestLocalWatch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l := openStore(t, t.TempDir(), testKeys(t))
	commit(t, l, Txn{Ops: []Op{put("a", "1")}})
	snap := snapshot(t, l)
	// Commits between the Snapshot and the Watch call are not lost.
	commit(t, l, Txn{Ops: []Op{put("b", "2")}})
	commit(t, l, Txn{Ops: []Op{del("a"), put("c", "3")}})
	ch := l.Watch(ctx, snap.Rev)

	// Concurrent committers after the Watch call.
	const writers, each = 4, 25
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := l.Commit(ctx, Txn{Ops: []Op{put(fmt.Sprintf("w%d/%d", w, i), "v")}}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	next := snap.Rev + 1
	var got []Batch
	for len(got) < 2+writers*each {
		select {
		case b := <-ch:
			if b.Rev != next || b.Reset {
				t.Fatalf("batch %+v, want rev %d", b, next)
			}
			next++
			got = append(got, b)
		case <-time.After(10 * time.Second):
			t.Fatalf("watch stalled after %d batches", len(got))
		}
	}
	wg.Wait()
	if e := got[0].Events; len(e) != 1 || e[0].Key != "b" || string(e[0].Value) != "2" || e[0].ModRev != 2 {
		t.Fatalf("batch 2 events %+v", e)
	}
	if e := got[1].Events; len(e) != 2 || !e[0].Deleted || e[0].Key != "a" || e[1].Key != "c" || e[0].ModRev != 3 {
		t.Fatalf("batch 3 events %+v", e)
	}
	// Replaying the watcher's batches over the first snapshot gives the
	// latest snapshot.
	state := map[string]string{}
	for _, kv := range snap.KVs {
		state[kv.Key] = string(kv.Value)
	}
	for _, b := range got {
		for _, e := range b.Events {
			if e.Deleted {
				delete(state, e.Key)
			} else {
				state[e.Key] = string(e.Value)
			}
		}
	}
	final := snapshot(t, l)
	if len(final.KVs) != len(state) || final.Rev != next-1 {
		t.Fatalf("replayed %d keys to rev %d, store has %d at %d", len(state), next-1, len(final.KVs), final.Rev)
	}
	for _, kv := range final.KVs {
		if state[kv.Key] != string(kv.Value) {
			t.Fatalf("replay differs at %s", kv.Key)
		}
	}

	// Watch at the current revision delivers only what comes next.
	ch2 := l.Watch(ctx, final.Rev)
	rev := commit(t, l, Txn{Ops: []Op{put("last", "x")}})
	if b := <-ch2; b.Rev != rev || b.Reset || len(b.Events) != 1 {
		t.Fatalf("watch at head got %+v", b)
	}
	// A watcher ahead of the store is told to reset.
	if b := <-l.Watch(ctx, rev+10); !b.Reset || b.Rev != rev {
		t.Fatalf("watch ahead got %+v", b)
	}
}

func TestLocalWatchReset(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l := openStore(t, t.TempDir(), testKeys(t))
	l.ringMax = 4
	for i := range 10 {
		commit(t, l, Txn{Ops: []Op{put("k", fmt.Sprint(i))}})
	}
	// Revisions 7..10 are in the ring: from 6 it replays, from 5 it resets.
	ch := l.Watch(ctx, 6)
	for want := Revision(7); want <= 10; want++ {
		if b := <-ch; b.Rev != want || b.Reset {
			t.Fatalf("replay got %+v, want rev %d", b, want)
		}
	}
	ch = l.Watch(ctx, 5)
	if b := <-ch; !b.Reset || b.Rev != 10 || b.Events != nil {
		t.Fatalf("gap got %+v, want Reset at 10", b)
	}
	// After a Reset the same channel goes on with new batches.
	commit(t, l, Txn{Ops: []Op{put("k", "new")}})
	if b := <-ch; b.Rev != 11 || b.Reset {
		t.Fatalf("after reset got %+v", b)
	}
}

func TestLocalSlowWatcherDoesNotBlock(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l := openStore(t, t.TempDir(), testKeys(t))
	slow := l.Watch(ctx, 0) // never read until the end
	const n = 300
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			if _, err := l.Commit(ctx, Txn{Ops: []Op{put("k", fmt.Sprint(i))}}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("commits blocked by a watcher that does not read")
	}
	for want := Revision(1); want <= n; want++ {
		if b := <-slow; b.Rev != want {
			t.Fatalf("slow watcher got rev %d, want %d", b.Rev, want)
		}
	}
}

func TestLocalWatchClosed(t *testing.T) {
	l := openStore(t, t.TempDir(), testKeys(t))
	ctx, cancel := context.WithCancel(context.Background())
	ch := l.Watch(ctx, 0)
	commit(t, l, Txn{Ops: []Op{put("k", "v")}})
	cancel()
	// The channel closes, whether or not the pending batch got out first.
	for range ch {
	}
	l.mu.Lock()
	n := len(l.watchers)
	l.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d watchers left after ctx ended", n)
	}

	ch = l.Watch(context.Background(), 0)
	ch2 := l.Watch(context.Background(), 1)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for range ch {
	}
	for range ch2 {
	}
}

func TestLocalCommitContext(t *testing.T) {
	l := openStore(t, t.TempDir(), testKeys(t))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Commit(ctx, Txn{Ops: []Op{put("k", "v")}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Commit with a done ctx: %v", err)
	}
	if s := snapshot(t, l); s.Rev != 0 {
		t.Fatal("Commit with a done ctx wrote")
	}
}

// TestLocalWriteFailure runs a child whose writes fail (RLIMIT_FSIZE) and
// checks that a failed Commit changes neither memory nor disk, and that the
// store works again once writes succeed.
func TestLocalWriteFailure(t *testing.T) {
	if os.Getenv("ENVLET_FETCH_WRITEFAIL_DIR") != "" {
		writeFailChild(os.Getenv("ENVLET_FETCH_WRITEFAIL_DIR"))
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLocalWriteFailure$")
	cmd.Env = append(os.Environ(), "ENVLET_FETCH_WRITEFAIL_DIR="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("WRITEFAIL-OK")) {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func writeFailChild(dir string) {
	fail := func(format string, args ...any) {
		fmt.Printf("child: "+format+"\n", args...)
		os.Exit(1)
	}
	ctx := context.Background()
	keys, err := LoadKeyring(filepath.Join(dir, "key"), true)
	if err != nil {
		fail("%v", err)
	}
	l, err := OpenLocal(filepath.Join(dir, "store"), keys)
	if err != nil {
		fail("%v", err)
	}
	if _, err := l.Commit(ctx, Txn{Ops: []Op{put("small", "1")}}); err != nil {
		fail("%v", err)
	}
	path := filepath.Join(dir, "store", logFileName)
	before, _ := os.ReadFile(path)
	// Writes past 4 KiB now fail with EFBIG (Go ignores SIGXFSZ).
	if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: 4096, Max: unix.RLIM_INFINITY}); err != nil {
		fail("setrlimit: %v", err)
	}
	_, err = l.Commit(ctx, Txn{Ops: []Op{{Key: "big", Value: make([]byte, 8192)}}})
	if err == nil {
		fail("oversized commit succeeded")
	}
	if s, _ := l.Snapshot(ctx); s.Rev != 1 || len(s.KVs) != 1 {
		fail("failed commit changed memory: rev %d", s.Rev)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		fail("failed commit changed the log")
	}
	if names := dirNamesOf(filepath.Join(dir, "store")); !slices.Equal(names, []string{lockFileName, logFileName}) {
		fail("failed commit left files: %v", dirNamesOf(filepath.Join(dir, "store")))
	}
	if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}); err != nil {
		fail("setrlimit: %v", err)
	}
	if rev, err := l.Commit(ctx, Txn{Ops: []Op{put("small", "2")}}); err != nil || rev != 2 {
		fail("commit after the failure: %d, %v", rev, err)
	}
	// A compaction that fails leaves the commit acknowledged and durable in
	// the log, and is tried again later.
	if _, err := l.Commit(ctx, Txn{Ops: []Op{{Key: "big", Value: make([]byte, 3000)}}}); err != nil {
		fail("%v", err)
	}
	if err := l.Compact(ctx); err != nil {
		fail("compact: %v", err)
	}
	statePath := filepath.Join(dir, "store", stateFileName)
	beforeState, _ := os.ReadFile(statePath)
	l.compactMin, l.stateSize = 1, 1 // compact at the next commit
	if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: 2048, Max: unix.RLIM_INFINITY}); err != nil {
		fail("setrlimit: %v", err)
	}
	if rev, err := l.Commit(ctx, Txn{Ops: []Op{put("small", "2")}}); err != nil || rev != 4 {
		fail("commit whose compaction fails: %d, %v", rev, err)
	}
	if after, _ := os.ReadFile(statePath); !bytes.Equal(beforeState, after) {
		fail("a failed compaction changed the state file")
	}
	if names := dirNamesOf(filepath.Join(dir, "store")); !slices.Equal(names, []string{stateFileName, lockFileName, logFileName}) {
		fail("failed compaction left files: %v", names)
	}
	if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}); err != nil {
		fail("setrlimit: %v", err)
	}
	if rev, err := l.Commit(ctx, Txn{Ops: []Op{put("small", "3")}}); err != nil || rev != 5 {
		fail("commit after the failed compaction: %d, %v", rev, err)
	}
	if after, _ := os.ReadFile(statePath); bytes.Equal(beforeState, after) {
		fail("the compaction was not tried again")
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != int64(logHeaderLen) {
		fail("log after the compaction: %v", err)
	}
	l.Close()
	l, err = OpenLocal(filepath.Join(dir, "store"), keys)
	if err != nil {
		fail("%v", err)
	}
	if s, _ := l.Snapshot(ctx); s.Rev != 5 || len(s.KVs) != 2 || string(s.KVs[1].Value) != "3" {
		fail("reopened at rev %d", s.Rev)
	}
	fmt.Println("WRITEFAIL-OK")
}

// dirNamesOf lists the files in dir, sorted.
func dirNamesOf(dir string) []string {
	entries, _ := os.ReadDir(dir)
	names := []string{}
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}

func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	return dirNamesOf(dir)
}

// dirContent renders every file of dir but the lock file, name and bytes,
// for comparison.
func dirContent(t testing.TB, dir string) string {
	t.Helper()
	var b strings.Builder
	for _, name := range dirNames(t, dir) {
		if name == lockFileName {
			continue // made by the first open; always empty
		}
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %x\n", name, data)
	}
	return b.String()
}

// benchStores are the stores BenchmarkCommit and BenchmarkCompact commit
// into: records already held, and the size of each value (and of the value
// committed): a variable's, or a registration's, whose record holds its 64
// variables.
var benchStores = []struct {
	name          string
	records, size int
}{
	{"keys=0", 0, 23},
	{"keys=1000", 1000, 23},
	{"keys=10000", 10000, 23},
	{"keys=10000x3KB", 10000, 3000},
}

// fillStore commits n records of size-byte sealed values in one batch and
// compacts, as a store that has been running a while looks.
func fillStore(b *testing.B, l *Local, keys *Keyring, n, size int) {
	if n == 0 {
		return
	}
	var ops []Op
	for i := range n {
		key := fmt.Sprintf("u/user%05d/v/VAR", i)
		ops = append(ops, Op{Key: key, Value: keys.Seal(nil, make([]byte, size), key)})
	}
	commit(b, l, Txn{Ops: ops})
	if err := l.Compact(context.Background()); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkCommit measures one durable Commit of one put (a value of the
// store's size) into each of benchStores, against two floors: appending a
// record of the same size to a file with one fdatasync, the least any
// durable commit costs (`append-floor`), and rewriting a file the size of
// the whole state (temp file, fsync, rename, fsync of the directory), what
// every commit cost before the store had a log (`rewrite-floor`). The
// compactions that the commits cause are in the figure (one per 1 MiB of
// log, or per state file's size); BenchmarkCompact times one.
func BenchmarkCommit(b *testing.B) {
	ctx := context.Background()
	keys := testKeys(b)
	for _, bs := range benchStores {
		b.Run(bs.name+"/local", func(b *testing.B) {
			l := openStore(b, b.TempDir(), keys)
			fillStore(b, l, keys, bs.records, bs.size)
			val := keys.Seal(nil, make([]byte, bs.size), "bench")
			start := time.Now()
			for b.Loop() {
				if _, err := l.Commit(ctx, Txn{Ops: []Op{{Key: "bench", Value: val}}}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "writes/s")
			b.ReportMetric(float64(l.stateSize), "state-bytes")
		})
		b.Run(bs.name+"/append-floor", func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "log"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			rec, _ := frameRecord(keys, encodeLogBody(nil, 1, []Event{{Key: "bench", Value: keys.Seal(nil, make([]byte, bs.size), "bench")}}))
			var off int64
			start := time.Now()
			for b.Loop() {
				if _, err := f.WriteAt(rec, off); err != nil {
					b.Fatal(err)
				}
				if err := unix.Fdatasync(int(f.Fd())); err != nil {
					b.Fatal(err)
				}
				off += int64(len(rec))
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "writes/s")
		})
		b.Run(bs.name+"/rewrite-floor", func(b *testing.B) {
			size := 200
			if bs.records > 0 {
				l := openStore(b, b.TempDir(), keys)
				fillStore(b, l, keys, bs.records, bs.size)
				size = int(l.stateSize)
			}
			dir := b.TempDir()
			data := make([]byte, size)
			d, err := os.Open(dir)
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			start := time.Now()
			for b.Loop() {
				f, err := os.CreateTemp(dir, "tmp-*")
				if err != nil {
					b.Fatal(err)
				}
				f.Write(data)
				f.Sync()
				f.Close()
				os.Rename(f.Name(), filepath.Join(dir, "file"))
				d.Sync()
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "writes/s")
			b.ReportMetric(float64(size), "file-bytes")
		})
	}
}

// BenchmarkCompact times one compaction of each of benchStores (the whole
// state written to a new state file and a new log started), and what it
// adds to each commit once spread over the commits of one value each that
// fill the log up to the compaction threshold.
func BenchmarkCompact(b *testing.B) {
	keys := testKeys(b)
	for _, bs := range benchStores {
		b.Run(bs.name, func(b *testing.B) {
			l := openStore(b, b.TempDir(), keys)
			fillStore(b, l, keys, bs.records, bs.size)
			commit(b, l, Txn{Ops: []Op{{Key: "bench", Value: keys.Seal(nil, make([]byte, bs.size), "bench")}}})
			rec := l.logSize - int64(logHeaderLen)
			start := time.Now()
			for b.Loop() {
				if err := l.Compact(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
			per := time.Since(start) / time.Duration(b.N)
			commits := max(l.compactMin, l.stateSize) / rec
			b.ReportMetric(float64(l.stateSize), "state-bytes")
			b.ReportMetric(float64(per.Microseconds())/float64(commits), "µs/commit-amortized")
		})
	}
}
