package regdir

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

// mapRegistry is a registry of the test's own: id -> the path that put it.
// The real one is the agent's (agent/workloadsdir_test.go runs it).
type mapRegistry struct {
	mu     sync.Mutex
	byID   map[string]string
	refuse string // Put refuses this id
}

type reg struct{ ID string }

func (r *mapRegistry) Update(fn func(Tx[reg])) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fn(r)
}

func (r *mapRegistry) Remove(id string) { delete(r.byID, id) }

func (r *mapRegistry) Put(g reg, path string) error {
	if g.ID == r.refuse {
		return errors.New("refused")
	}
	r.byID[g.ID] = filepath.Base(path)
	return nil
}

func (r *mapRegistry) snapshot() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.byID)
}

func parse(b []byte) (reg, string, error) {
	var g reg
	if err := json.Unmarshal(b, &g); err != nil || g.ID == "" {
		return reg{}, "", errors.New("not a registration")
	}
	return g, g.ID, nil
}

func newWatcher(t *testing.T, r *mapRegistry, rescanned chan struct{}) (*Watcher[reg], string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "workloads.d")
	d, err := New(Config[reg]{Dir: dir, MaxFileBytes: 1 << 10, Parse: parse, Registry: r, Rescanned: rescanned})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, dir
}

// TestRescan walks a directory through the changes a workloads.d sees and
// checks after each step which file registers which id, in the registry
// and in the watcher's own maps.
func TestRescan(t *testing.T) {
	t.Parallel()
	r := &mapRegistry{byID: map[string]string{}, refuse: "nope"}
	d, dir := newWatcher(t, r, nil)
	doc := func(id string) string { return `{"ID":"` + id + `"}` }
	for _, step := range []struct {
		name  string
		write map[string]string // file -> content; "" removes it
		want  map[string]string // id -> file that registers it
	}{
		{"two files", map[string]string{"a.json": doc("wa"), "b.json": doc("wb")},
			map[string]string{"wa": "a.json", "wb": "b.json"}},
		{"an id another file holds is refused", map[string]string{"c.json": doc("wa")},
			map[string]string{"wa": "a.json", "wb": "b.json"}},
		{"the id moves to the other file once it is free", map[string]string{"a.json": doc("wa2")},
			map[string]string{"wa": "c.json", "wa2": "a.json", "wb": "b.json"}},
		{"a file that takes an id held elsewhere loses its own", map[string]string{"b.json": doc("wa2")},
			map[string]string{"wa": "c.json", "wa2": "a.json"}},
		{"its old id is free for a third file", map[string]string{"d.json": doc("wb")},
			map[string]string{"wa": "c.json", "wa2": "a.json", "wb": "d.json"}},
		{"removals", map[string]string{"a.json": "", "c.json": ""},
			map[string]string{"wb": "d.json", "wa2": "b.json"}},
		{"not a registration keeps the version in force", map[string]string{"d.json": `{"ID":`},
			map[string]string{"wb": "d.json", "wa2": "b.json"}},
		{"the registry refuses one", map[string]string{"e.json": doc("nope")},
			map[string]string{"wb": "d.json", "wa2": "b.json"}},
		{"an id moves between files in one rescan", map[string]string{"d.json": "", "f.json": doc("wb")},
			map[string]string{"wb": "f.json", "wa2": "b.json"}},
		{"over the size limit", map[string]string{"g.json": `{"ID":"big","pad":"` + string(make([]byte, 2<<10)) + `"}`},
			map[string]string{"wb": "f.json", "wa2": "b.json"}},
	} {
		for name, body := range step.write {
			p := filepath.Join(dir, name)
			if body == "" {
				os.Remove(p)
			} else if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		d.Rescan()
		if got := r.snapshot(); !maps.Equal(got, step.want) {
			t.Fatalf("%s: registered %v, want %v", step.name, got, step.want)
		}
		for p, id := range d.idOf {
			if d.pathOf[id] != p || filepath.Base(p) != step.want[id] {
				t.Fatalf("%s: idOf %s -> %s, pathOf %s", step.name, p, id, d.pathOf[id])
			}
		}
		if len(d.pathOf) != len(d.idOf) || len(d.idOf) != len(step.want) {
			t.Fatalf("%s: %d files, %d ids, want %d", step.name, len(d.idOf), len(d.pathOf), len(step.want))
		}
	}
}

// TestSpecialFiles: a FIFO does not hang the rescan and a symlink out of
// the directory is not followed.
func TestSpecialFiles(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "workloads.d")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo.json"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "w1.json"), []byte(`{"ID":"w1"}`), 0o644)
	other := filepath.Join(t.TempDir(), "elsewhere.json")
	os.WriteFile(other, []byte(`{"ID":"w2"}`), 0o644)
	if err := os.Symlink(other, filepath.Join(dir, "link.json")); err != nil {
		t.Fatal(err)
	}
	r := &mapRegistry{byID: map[string]string{}}
	d, err := New(Config[reg]{Dir: dir, MaxFileBytes: 1 << 10, Parse: parse, Registry: r})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if got := r.snapshot(); !maps.Equal(got, map[string]string{"w1": "w1.json"}) {
		t.Fatalf("registered %v, want only w1", got)
	}
}

// TestRunFollowsChanges: Run rescans when a file appears and when it goes.
func TestRunFollowsChanges(t *testing.T) {
	t.Parallel()
	r := &mapRegistry{byID: map[string]string{}}
	rescanned := make(chan struct{}, 1)
	d, dir := newWatcher(t, r, rescanned)
	<-rescanned // New's own
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	waitFor := func(want map[string]string) {
		t.Helper()
		for !maps.Equal(r.snapshot(), want) {
			<-rescanned
		}
	}
	os.WriteFile(filepath.Join(dir, "w.json"), []byte(`{"ID":"w"}`), 0o644)
	waitFor(map[string]string{"w": "w.json"})
	os.Remove(filepath.Join(dir, "w.json"))
	waitFor(map[string]string{})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}
