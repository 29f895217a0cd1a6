package agent

import (
	"path/filepath"
	"testing"

	"github.com/envlet/envlet/fetch"
)

// TestReReadKeepsWorkloads: a full re-read of the store (etcd compacted
// past the agent, a reloaded key ring) puts every API registration back as
// it was: what it served and its env revision stay, and its watchers hear
// nothing when its environment did not change; a re-read that changes it
// notifies them; a registration the store no longer holds is removed and
// its watches end.
func TestReReadKeepsWorkloads(t *testing.T) {
	a := testAgent(t)
	keys, err := fetch.LoadKeyring(filepath.Join(t.TempDir(), "keyring"), true)
	if err != nil {
		t.Fatal(err)
	}
	a.keys = keys
	uid := uint32(4242)
	reg := func(id, r string) fetch.KV {
		key := keyWorkload(id)
		doc := Registration{ID: id, User: "u", Project: "p", Match: Match{UID: &uid}, Runtime: map[string]string{"R": r}}
		return fetch.KV{Key: key, Value: a.sealJSON(key, doc), ModRev: 1}
	}
	reread := func(rev fetch.Revision, kvs ...fetch.KV) {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.applySnapshot(fetch.Snapshot{Rev: rev, KVs: kvs})
	}
	watch := func(id string) *watcher {
		w := &watcher{wake: make(chan struct{}, 1), gone: make(chan struct{})}
		if !a.watchers.add(id, w) {
			t.Fatalf("watch %s refused", id)
		}
		return w
	}

	reread(5, reg("keep", "1"), reg("gone", "1"))
	a.workloads["keep"].servedRev.Store(5)
	keep, gone := watch("keep"), watch("gone")

	for _, step := range []struct {
		name     string
		rev      fetch.Revision
		r        string         // keep's R in the store
		envRev   fetch.Revision // keep's, after the re-read
		notified bool
	}{
		{"unchanged", 9, "1", 5, false},
		{"changed", 12, "2", 12, true},
	} {
		reread(step.rev, reg("keep", step.r))
		w := a.workloads["keep"]
		if w == nil || w.envRev != step.envRev || w.servedRev.Load() != 5 {
			t.Fatalf("%s: keep after the re-read: %+v", step.name, w)
		}
		select {
		case <-keep.wake:
			if !step.notified || keep.rev.Load() != uint64(step.rev) {
				t.Errorf("%s: watcher notified at revision %d", step.name, keep.rev.Load())
			}
		default:
			if step.notified {
				t.Errorf("%s: watcher not notified", step.name)
			}
		}
		if a.workloads["gone"] != nil {
			t.Errorf("%s: a registration gone from the store is still there", step.name)
		}
		select {
		case <-gone.gone:
		default:
			t.Errorf("%s: the watch of a registration gone from the store goes on", step.name)
		}
	}
}
