package agent

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
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
	pathOf  map[string]string   // workload id -> path: idOf inverted, so a rescan checks an id in one lookup
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
	d := &dirWatch{a: a, dir: a.cfg.WorkloadsDir, w: w, loaded: map[string][32]byte{}, idOf: map[string]string{}, pathOf: map[string]string{}}
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
				d.drain()
				d.rescan()
			}
		case err, ok := <-d.w.Errors:
			if !ok {
				return nil
			}
			// An overflow loses events; a rescan recovers the truth.
			d.a.log.Warn("workloads dir watch", "error", err)
			d.drain()
			d.rescan()
		}
	}
}

// drain takes the events already waiting: the rescan that follows reads
// the whole directory, so it covers them. Files dropped in a burst (a
// config manager writing thousands) then cost a few rescans, not one each.
func (d *dirWatch) drain() {
	for {
		select {
		case _, ok := <-d.w.Events:
			if !ok {
				return
			}
		case err, ok := <-d.w.Errors:
			if !ok {
				return
			}
			d.a.log.Warn("workloads dir watch", "error", err)
		default:
			return
		}
	}
}

// rescan loads every *.json file whose content changed and drops the
// registrations of files that are gone. A file that does not parse keeps
// the version last in force (it may be half written) and is logged.
// rescanChunk is how many files a rescan reads and registers at a time:
// holding every parsed file of a large directory at once would make the
// start's heap, and so the agent's resident memory, grow with it.
const rescanChunk = 512

func (d *dirWatch) rescan() {
	paths, _ := filepath.Glob(filepath.Join(d.dir, "*.json"))
	a := d.a
	present := make(map[string]bool, len(paths))
	for _, p := range paths {
		present[p] = true
	}
	// Removals first, so an id that moves from one file to another is free.
	a.mu.Lock()
	for p, id := range d.idOf {
		if !present[p] {
			a.removeWorkload(id, sourceFile)
			d.unbind(p)
			a.log.Info("workload removed", "workload", id, "path", p)
		}
	}
	a.mu.Unlock()
	for i := 0; i < len(paths); i += rescanChunk {
		d.register(d.loadAll(paths[i:min(i+rescanChunk, len(paths))]))
	}
	if d.rescans != nil {
		select {
		case d.rescans <- struct{}{}:
		default:
		}
	}
}

// loadAll reads and parses files outside a.mu: a file that is slow to
// open or read (a FIFO, a hung network file system) must not stall the
// agent. The files are read and parsed on every core: at start, with
// thousands of files, decoding them is most of the agent's work.
func (d *dirWatch) loadAll(paths []string) []dirFile {
	files := make([]dirFile, len(paths))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(paths)) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(paths); i = int(next.Add(1) - 1) {
				files[i] = d.load(paths[i])
			}
		})
	}
	wg.Wait()
	return files
}

// register puts the registrations of loaded files.
func (d *dirWatch) register(files []dirFile) {
	a := d.a
	var todo []dirFile
	for _, f := range files {
		switch {
		case f.readErr != nil:
			a.log.Error("read workload file", "path", f.path, "error", f.readErr)
		case f.parseErr != nil:
			a.log.Error("workload file refused", "path", f.path, "error", f.parseErr)
		case f.reg != nil:
			todo = append(todo, f)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, l := range todo {
		p, reg := l.path, l.reg
		if id, ok := d.idOf[p]; ok && id != reg.ID {
			// The file now names another id: its old one is gone, and
			// free for another file.
			a.removeWorkload(id, sourceFile)
			d.unbind(p)
		}
		if other, ok := d.pathOf[reg.ID]; ok && other != p {
			a.log.Error("workload file refused", "path", p, "error", fmt.Sprintf("id %s is already registered by %s", reg.ID, other))
			continue
		}
		if err := a.putWorkload(reg, sourceFile); err != nil {
			a.log.Error("workload file refused", "path", p, "error", err)
			continue
		}
		a.workloads[reg.ID].path = p
		d.loaded[p] = l.sum
		d.bind(p, reg.ID)
		a.log.Info("workload registered", "workload", reg.ID, "path", p)
	}
}

// dirFile is one file of a rescan: its registration, or why it has none
// (reg is nil and so are both errors when the file is as it was).
type dirFile struct {
	path     string
	sum      [32]byte
	reg      *Registration
	readErr  error
	parseErr error
}

// load reads and parses the file at p unless its digest is the version in
// force. It only reads d.loaded, so loads run in parallel.
func (d *dirWatch) load(p string) dirFile {
	f := dirFile{path: p}
	b, err := readSmall(p, maxRegistrationBytes)
	if err != nil {
		f.readErr = err
		return f
	}
	defer clear(b)
	f.sum = sha256.Sum256(b)
	if old, ok := d.loaded[p]; ok && old == f.sum {
		return f
	}
	f.reg, f.parseErr = parseRegistration(b)
	return f
}

// bind records that the file at p registers id. No other file does: a
// file naming an id that another holds is refused.
func (d *dirWatch) bind(p, id string) {
	d.idOf[p] = id
	d.pathOf[id] = p
}

// unbind forgets the file at p and the id it registered.
func (d *dirWatch) unbind(p string) {
	if id, ok := d.idOf[p]; ok {
		delete(d.pathOf, id)
		delete(d.idOf, p)
	}
	delete(d.loaded, p)
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
