package agent

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/fsnotify/fsnotify"
)

// dirWatch keeps the file registrations in step with workloads.d: a new,
// changed or removed *.json file applies without a restart. Every event
// rescans the whole directory, which also copes with editors that write a
// temporary file and rename it over the old one.
type dirWatch struct {
	a       *Agent
	dir     string
	w       *fsnotify.Watcher
	loaded  map[string][32]byte // path -> digest of the version in force (not the bytes: they hold values)
	idOf    map[string]string   // path -> workload id
	rescans chan struct{}       // tests wait on this
}

func (a *Agent) watchWorkloadsDir() (*dirWatch, error) {
	if err := os.MkdirAll(a.cfg.WorkloadsDir, 0o755); err != nil {
		return nil, fmt.Errorf("create workloads dir: %w", err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch workloads dir: %w", err)
	}
	if err := w.Add(a.cfg.WorkloadsDir); err != nil {
		w.Close()
		return nil, fmt.Errorf("watch %s: %w", a.cfg.WorkloadsDir, err)
	}
	d := &dirWatch{a: a, dir: a.cfg.WorkloadsDir, w: w, loaded: map[string][32]byte{}, idOf: map[string]string{}}
	d.rescan()
	return d, nil
}

func (d *dirWatch) Close() error { return d.w.Close() }

func (d *dirWatch) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-d.w.Events:
			if !ok {
				return nil
			}
			if strings.HasSuffix(ev.Name, ".json") {
				d.rescan()
			}
		case err, ok := <-d.w.Errors:
			if !ok {
				return nil
			}
			// An overflow loses events; a rescan recovers the truth.
			d.a.log.Warn("workloads dir watch", "error", err)
			d.rescan()
		}
	}
}

// rescan loads every *.json file whose content changed and drops the
// registrations of files that are gone. A file that does not parse keeps
// the version last in force (it may be half written) and is logged.
func (d *dirWatch) rescan() {
	paths, _ := filepath.Glob(filepath.Join(d.dir, "*.json"))
	a := d.a
	// Read and parse outside a.mu: a file that is slow to open or read
	// (a FIFO, a hung network file system) must not stall the agent.
	type loaded struct {
		path string
		sum  [32]byte
		reg  *Registration
	}
	var todo []loaded
	present := map[string]bool{}
	for _, p := range paths {
		present[p] = true
		b, err := readSmall(p, maxRegistrationBytes)
		if err != nil {
			a.log.Error("read workload file", "path", p, "error", err)
			continue
		}
		sum := sha256.Sum256(b)
		if old, ok := d.loaded[p]; ok && old == sum {
			clear(b)
			continue
		}
		reg, err := parseRegistration(b)
		clear(b)
		if err != nil {
			a.log.Error("workload file refused", "path", p, "error", err)
			continue
		}
		todo = append(todo, loaded{p, sum, reg})
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	// Removals first, so an id that moves from one file to another is free.
	for p, id := range d.idOf {
		if !present[p] {
			a.removeWorkload(id, sourceFile)
			delete(d.loaded, p)
			delete(d.idOf, p)
			a.log.Info("workload removed", "workload", id, "path", p)
		}
	}
	for _, l := range todo {
		p, reg := l.path, l.reg
		if id, ok := d.idOf[p]; ok && id != reg.ID {
			a.removeWorkload(id, sourceFile)
		}
		if other := d.owner(reg.ID); other != "" && other != p {
			a.log.Error("workload file refused", "path", p, "error", fmt.Sprintf("id %s is already registered by %s", reg.ID, other))
			continue
		}
		if err := a.putWorkload(reg, sourceFile); err != nil {
			a.log.Error("workload file refused", "path", p, "error", err)
			continue
		}
		a.workloads[reg.ID].path = p
		d.loaded[p], d.idOf[p] = l.sum, reg.ID
		a.log.Info("workload registered", "workload", reg.ID, "path", p)
	}
	if d.rescans != nil {
		select {
		case d.rescans <- struct{}{}:
		default:
		}
	}
}

// owner returns the file that registered id, if any.
func (d *dirWatch) owner(id string) string {
	for p, x := range d.idOf {
		if x == id {
			return p
		}
	}
	return ""
}

func readSmall(path string, max int) ([]byte, error) {
	// Non-blocking so a FIFO cannot hang the open; no symlinks, so the
	// file is the one in the directory; a non-regular file is refused.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file")
	}
	if fi.Size() > int64(max) {
		return nil, fmt.Errorf("file is %d bytes, over the limit of %d", fi.Size(), max)
	}
	b := make([]byte, fi.Size())
	n, err := f.ReadAt(b, 0)
	if err != nil && n != len(b) {
		return nil, err
	}
	return b, nil
}
