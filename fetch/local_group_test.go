package fetch

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
)

// TestLocalGroupCommitConds: writers committing at once (so their Commits
// are written in groups) each increment one counter by compare-and-swap on
// its ModRev, retrying on conflict. Each Commit of a group is checked
// against the ones before it in the group, so no two increments both
// succeed from the same value: the counter ends at the number of
// successful Commits, revisions are unique, and the store reopens the same.
func TestLocalGroupCommitConds(t *testing.T) {
	dir := t.TempDir()
	keys, err := LoadKeyring(filepath.Join(dir, "key"), true)
	if err != nil {
		t.Fatal(err)
	}
	l, err := OpenLocal(filepath.Join(dir, "store"), keys)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const writers, each = 16, 25
	var mu sync.Mutex
	revs := map[Revision]bool{}
	maxGroup := 0
	l.hook = func(p string) {
		if p == "append-synced" {
			maxGroup = max(maxGroup, l.groupLen) // sem held: no race
		}
	}
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for done := 0; done < each; {
				s, err := l.Snapshot(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				n, mod := 0, Revision(0)
				for _, kv := range s.KVs {
					if kv.Key == "counter" {
						n, _ = strconv.Atoi(string(kv.Value))
						mod = kv.ModRev
					}
				}
				rev, err := l.Commit(ctx, Txn{Conds: []Cond{{Key: "counter", ModRev: mod}}, Ops: []Op{{Key: "counter", Value: []byte(strconv.Itoa(n + 1))}}})
				if errors.Is(err, ErrConflict) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if revs[rev] {
					t.Errorf("revision %d acknowledged twice", rev)
				}
				revs[rev] = true
				mu.Unlock()
				done++
			}
		})
	}
	wg.Wait()
	check := func(what string, l *Local) {
		s, err := l.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.KVs) != 1 || string(s.KVs[0].Value) != strconv.Itoa(writers*each) || s.Rev != Revision(writers*each) {
			t.Fatalf("%s: %d records, counter %q at revision %d; want %d", what, len(s.KVs), s.KVs[0].Value, s.Rev, writers*each)
		}
	}
	check("after the writers", l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2, err := OpenLocal(filepath.Join(dir, "store"), keys)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	check("reopened", l2)
	t.Logf("largest group written: %d records (the rest of each group conflicted)", maxGroup)
}
