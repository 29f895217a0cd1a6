package agent

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"testing"
)

// TestWorkloadsDirRescan drives the workloads.d watcher (package regdir)
// through the changes a directory sees, one step after another, and checks
// after each which file registers which workload in the agent.
func TestWorkloadsDirRescan(t *testing.T) {
	a := apiAgent(t)
	dir := a.cfg.WorkloadsDir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	reg := func(id string, uid int) string {
		return fmt.Sprintf(`{"id":%q,"user":"u","project":"p","match":{"uid":%d}}`, id, uid)
	}
	d, err := a.watchWorkloadsDir()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, step := range []struct {
		name  string
		write map[string]string // file -> content; "" removes it
		want  map[string]string // workload id -> file that registers it
	}{
		{"two files", map[string]string{"a.json": reg("wa", 5001), "b.json": reg("wb", 5002)},
			map[string]string{"wa": "a.json", "wb": "b.json"}},
		{"an id another file holds is refused", map[string]string{"c.json": reg("wa", 5003)},
			map[string]string{"wa": "a.json", "wb": "b.json"}},
		{"the id moves to the other file once it is free", map[string]string{"a.json": reg("wa2", 5001)},
			map[string]string{"wa": "c.json", "wa2": "a.json", "wb": "b.json"}},
		{"a file that takes an id held elsewhere loses its own", map[string]string{"b.json": reg("wa2", 5002)},
			map[string]string{"wa": "c.json", "wa2": "a.json"}},
		{"its old id is free for a third file", map[string]string{"d.json": reg("wb", 5004)},
			map[string]string{"wa": "c.json", "wa2": "a.json", "wb": "d.json"}},
		{"removals", map[string]string{"a.json": "", "c.json": ""},
			map[string]string{"wb": "d.json", "wa2": "b.json"}},
		{"not json keeps the version in force", map[string]string{"d.json": `{"id":`},
			map[string]string{"wb": "d.json", "wa2": "b.json"}},
		{"an id moves between files in one rescan", map[string]string{"d.json": "", "e.json": reg("wb", 5005)},
			map[string]string{"wb": "e.json", "wa2": "b.json"}},
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
		a.mu.RLock()
		got := map[string]string{}
		for id, w := range a.workloads {
			if w.source == sourceFile {
				got[id] = filepath.Base(w.path)
			}
		}
		a.mu.RUnlock()
		if !maps.Equal(got, step.want) {
			t.Fatalf("%s: registered %v, want %v", step.name, got, step.want)
		}
	}
}
