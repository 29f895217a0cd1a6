package regdir

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/fsnotify/fsnotify"
	"github.com/hashicorp/go-hclog"
)

// Registry is what the directory's files register into. Update runs fn
// with the registry locked; fn removes and puts through tx.
type Registry[R any] interface {
	Update(fn func(tx Tx[R]))
}

// Tx changes the registry while Update holds it.
type Tx[R any] interface {
	// Remove drops the workload that a file registered.
	Remove(id string)
	// Put registers reg, read from the file at path; an error refuses it.
	Put(reg R, path string) error
}

// Config says which directory to watch and how to read its files.
type Config[R any] struct {
	Dir string
	// MaxFileBytes bounds a file; a larger one is refused unread.
	MaxFileBytes int
	// Parse turns a file's bytes into a registration and its id. The bytes
	// are cleared once Parse returns.
	Parse    func(b []byte) (reg R, id string, err error)
	Registry Registry[R]
	Log      hclog.Logger
	// Rescanned, if set, is sent to (without blocking) after each rescan.
	Rescanned chan<- struct{}
}

// Watcher follows one directory.
type Watcher[R any] struct {
	cfg    Config[R]
	w      *fsnotify.Watcher
	loaded map[string][32]byte // path -> digest of the version in force (not the bytes: they hold values)
	idOf   map[string]string   // path -> workload id
	pathOf map[string]string   // workload id -> path: idOf inverted, so a rescan checks an id in one lookup
}

// New creates the directory if needed, starts watching it and registers
// what it holds (one rescan, before it returns).
func New[R any](cfg Config[R]) (*Watcher[R], error) {
	if cfg.Log == nil {
		cfg.Log = hclog.NewNullLogger()
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create workloads dir: %w", err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch workloads dir: %w", err)
	}
	if err := w.Add(cfg.Dir); err != nil {
		w.Close()
		return nil, fmt.Errorf("watch %s: %w", cfg.Dir, err)
	}
	d := &Watcher[R]{cfg: cfg, w: w, loaded: map[string][32]byte{}, idOf: map[string]string{}, pathOf: map[string]string{}}
	d.Rescan()
	return d, nil
}

// Close stops watching.
func (d *Watcher[R]) Close() error { return d.w.Close() }

// Run rescans on every change to a *.json file until ctx is done. Every
// event rescans the whole directory, which also copes with editors that
// write a temporary file and rename it over the old one.
func (d *Watcher[R]) Run(ctx context.Context) error {
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
				d.Rescan()
			}
		case err, ok := <-d.w.Errors:
			if !ok {
				return nil
			}
			// An overflow loses events; a rescan recovers the truth.
			d.cfg.Log.Warn("workloads dir watch", "error", err)
			d.drain()
			d.Rescan()
		}
	}
}

// drain takes the events already waiting: the rescan that follows reads
// the whole directory, so it covers them. Files dropped in a burst (a
// config manager writing thousands) then cost a few rescans, not one each.
func (d *Watcher[R]) drain() {
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
			d.cfg.Log.Warn("workloads dir watch", "error", err)
		default:
			return
		}
	}
}

// rescanChunk is how many files a rescan reads and registers at a time:
// holding every parsed file of a large directory at once would make the
// start's heap, and so the agent's resident memory, grow with it.
const rescanChunk = 512

// Rescan loads every *.json file whose content changed and drops the
// registrations of files that are gone. A file that does not parse keeps
// the version last in force (it may be half written) and is logged. Run
// calls it; so may a caller that knows the directory changed.
func (d *Watcher[R]) Rescan() {
	paths, _ := filepath.Glob(filepath.Join(d.cfg.Dir, "*.json"))
	present := make(map[string]bool, len(paths))
	for _, p := range paths {
		present[p] = true
	}
	// Removals first, so an id that moves from one file to another is free.
	d.cfg.Registry.Update(func(tx Tx[R]) {
		for p, id := range d.idOf {
			if !present[p] {
				tx.Remove(id)
				d.unbind(p)
				d.cfg.Log.Info("workload removed", "workload", id, "path", p)
			}
		}
	})
	for i := 0; i < len(paths); i += rescanChunk {
		d.register(d.loadAll(paths[i:min(i+rescanChunk, len(paths))]))
	}
	if d.cfg.Rescanned != nil {
		select {
		case d.cfg.Rescanned <- struct{}{}:
		default:
		}
	}
}

// loadAll reads and parses files outside the registry's lock: a file that
// is slow to open or read (a FIFO, a hung network file system) must not
// stall the agent. The files are read and parsed on every core: at start,
// with thousands of files, decoding them is most of the work.
func (d *Watcher[R]) loadAll(paths []string) []file[R] {
	files := make([]file[R], len(paths))
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
func (d *Watcher[R]) register(files []file[R]) {
	log := d.cfg.Log
	var todo []file[R]
	for _, f := range files {
		switch {
		case f.readErr != nil:
			log.Error("read workload file", "path", f.path, "error", f.readErr)
		case f.parseErr != nil:
			log.Error("workload file refused", "path", f.path, "error", f.parseErr)
		case f.parsed:
			todo = append(todo, f)
		}
	}
	d.cfg.Registry.Update(func(tx Tx[R]) {
		for _, l := range todo {
			p := l.path
			if id, ok := d.idOf[p]; ok && id != l.id {
				// The file now names another id: its old one is gone, and
				// free for another file.
				tx.Remove(id)
				d.unbind(p)
			}
			if other, ok := d.pathOf[l.id]; ok && other != p {
				log.Error("workload file refused", "path", p, "error", fmt.Sprintf("id %s is already registered by %s", l.id, other))
				continue
			}
			if err := tx.Put(l.reg, p); err != nil {
				log.Error("workload file refused", "path", p, "error", err)
				continue
			}
			d.loaded[p] = l.sum
			d.bind(p, l.id)
			log.Info("workload registered", "workload", l.id, "path", p)
		}
	})
}

// file is one file of a rescan: its registration, or why it has none
// (parsed is false and both errors are nil when the file is as it was).
type file[R any] struct {
	path     string
	sum      [32]byte
	parsed   bool
	reg      R
	id       string
	readErr  error
	parseErr error
}

// load reads and parses the file at p unless its digest is the version in
// force. It only reads d.loaded, so loads run in parallel.
func (d *Watcher[R]) load(p string) file[R] {
	f := file[R]{path: p}
	b, err := readSmall(p, d.cfg.MaxFileBytes)
	if err != nil {
		f.readErr = err
		return f
	}
	defer clear(b)
	f.sum = sha256.Sum256(b)
	if old, ok := d.loaded[p]; ok && old == f.sum {
		return f
	}
	f.reg, f.id, f.parseErr = d.cfg.Parse(b)
	f.parsed = f.parseErr == nil
	return f
}

// bind records that the file at p registers id. No other file does: a
// file naming an id that another holds is refused.
func (d *Watcher[R]) bind(p, id string) {
	d.idOf[p] = id
	d.pathOf[id] = p
}

// unbind forgets the file at p and the id it registered.
func (d *Watcher[R]) unbind(p string) {
	if id, ok := d.idOf[p]; ok {
		delete(d.pathOf, id)
		delete(d.idOf, p)
	}
	delete(d.loaded, p)
}

// readSmall reads a regular file of at most max bytes. Non-blocking so a
// FIFO cannot hang the open; no symlinks, so the file is the one in the
// directory; a non-regular file is refused.
func readSmall(path string, max int) ([]byte, error) {
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
		return nil, errors.New("not a regular file")
	}
	if max > 0 && fi.Size() > int64(max) {
		return nil, fmt.Errorf("file is %d bytes, over the limit of %d", fi.Size(), max)
	}
	b := make([]byte, fi.Size())
	n, err := f.ReadAt(b, 0)
	if err != nil && n != len(b) {
		return nil, err
	}
	return b, nil
}
