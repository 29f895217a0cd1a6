package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-secure-stdlib/mlock"
	"golang.org/x/sys/unix"

	"github.com/envlet/envlet/agent/internal/metrics"
	"github.com/envlet/envlet/agent/internal/selfrun"
	"github.com/envlet/envlet/cache"
	"github.com/envlet/envlet/fetch"
)

// Agent is envletd: it keeps the store's variables in locked memory,
// resolves each registered workload's environment when something changes,
// and serves it on the workload socket; the admin socket manages it all.
type Agent struct {
	requests atomic.Uint64 // workload socket connections served, for trimMemory
	cfg      Config
	log      hclog.Logger
	reserved Reserved
	pool     *cache.Pool
	keys     *fetch.Keyring
	backend  fetch.Backend
	mirror   *fetch.Mirror // the etcd backend's last-read snapshot; nil for local
	keyPath  string        // the key ring file, reloaded when it changes
	reread   chan struct{} // asks follow for a full re-read (key ring reloaded)
	audit    *auditLog
	started  time.Time

	// Code-loading names the project and group layers may not set
	// (protected_names, protect.go).
	protected Reserved

	// OnReady, if set, runs once the sockets are open and the first fill of
	// the cache is done, before anything is served.
	OnReady func()

	mu        sync.RWMutex
	model     *model
	workloads map[string]*workload
	index     *workloadIndex // narrows match to a caller's candidates
	platform  layer          // in name order (sortPlatform)
	rs        resolveState   // interned names, digest seed, merge scratch (resolve.go)
	revWait   chan struct{}  // closed and replaced each time model.rev moves

	writeMu  sync.Mutex // one admin write at a time after a conflict (ops.go): read, check, commit, wait
	adminGID int        // gid of cfg.AdminGroup, -1 if there is none
	names    sync.Map   // uid -> user name

	metrics atomic.Pointer[metrics.Metrics] // metrics.go; nil while metrics_listen is off
	engine  containerLookup                 // the container engine followed (engine.go); nil when none

	limMu    sync.Mutex
	limiters map[string]*connLimiter // by socket: connections held (server.go)

	// Delivery (mount.go, watch.go) and what a reload changes (notify.go).
	mounts       *mounter
	watchers     watchSet
	platformBufs []*cache.Buf // the platform layer's values
	liveSettings

	runs *selfrun.Books // self-service runs held (admin_run.go)
}

// New returns an agent for cfg; Run starts it.
func New(cfg Config, log hclog.Logger) *Agent {
	pool := cache.NewPool()
	return &Agent{
		cfg:       cfg,
		log:       log,
		reserved:  NewReserved(cfg.Reserved),
		protected: NewReserved(cfg.ProtectedNames),
		pool:      pool,
		mounts:    newMounter(cfg.MountDir, log, pool),
		model:     newModel(),
		workloads: map[string]*workload{},
		index:     newWorkloadIndex(),
		revWait:   make(chan struct{}),
		reread:    make(chan struct{}, 1),
		adminGID:  -1,
		started:   time.Now(),
		runs:      selfrun.New(cfg.MaxRunsPerUser),
	}
}

// Run opens the store and the sockets, then serves until ctx ends or a part
// fails. It returns ctx's error after a clean stop.
func (a *Agent) Run(ctx context.Context) error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("disable core dumps: %w", err)
	}
	if a.cfg.MlockAll {
		if err := mlock.LockMemory(); err != nil {
			return fmt.Errorf("mlockall (mlockall = true; needs CAP_IPC_LOCK): %w", err)
		}
	}
	if err := os.MkdirAll(a.cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	keys, err := a.loadKeys()
	if err != nil {
		return err
	}
	a.keys = keys
	backend, err := a.openBackend(keys)
	if err != nil {
		return err
	}
	a.backend = backend
	defer backend.Close()
	if a.audit, err = openAudit(a.cfg.AuditLog, filepath.Join(a.cfg.StateDir, "audit.key"), a.pool); err != nil {
		return err
	}
	a.audit.log = a.log // before any record: a failed write is reported there
	// logrotate's postrotate; set up before READY, like SIGHUP.
	a.audit.reopenOnSignal(unix.SIGUSR1)
	defer a.audit.Close()
	if g, err := user.LookupGroup(a.cfg.AdminGroup); err == nil {
		a.adminGID, _ = strconv.Atoi(g.Gid)
	}
	a.setPlatform()

	snap, err := a.readStore(ctx, true)
	if err != nil {
		return fmt.Errorf("read store: %w", err)
	}
	if a.mirror != nil {
		if st := a.mirror.Status(); st.FromSnapshot {
			a.log.Warn("etcd is unavailable: serving the last-read snapshot until it answers; writes fail with BACKEND_UNAVAILABLE",
				"revision", st.Rev, "stale_seconds", int64(time.Since(st.CurrentAt).Seconds()))
		}
	}
	a.mu.Lock()
	a.applySnapshot(snap)
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.model.free()
		for _, w := range a.workloads {
			w.free()
		}
		a.mu.Unlock()
	}()

	dirWatch, err := a.watchWorkloadsDir()
	if err != nil {
		return err
	}
	defer dirWatch.Close()
	a.sweepMounts()
	// Both kinds of registration are in: token files no one holds go.
	a.mu.Lock()
	a.sweepTokens()
	a.mu.Unlock()
	// Start-up decoded the whole store and every registration file at
	// once; give that garbage back to the kernel before serving, so the
	// agent's resident memory is what it holds, not what it once parsed.
	debug.FreeOSMemory()

	followEngine, err := a.startEngine()
	if err != nil {
		return err
	}
	// From systemd socket activation where it passed them, else bound here.
	socks, err := a.openSockets()
	if err != nil {
		return err
	}
	hup, stopHUP := hupSignals()
	defer stopHUP()

	a.log.Info("serving", "backend", a.backendName(), "revision", snap.Rev, "workload_socket", socks.workload.Addr().String(), "admin_socket", socks.admin.Addr().String(), "locked_memory", a.pool.Stats().Locked)
	if a.OnReady != nil {
		a.OnReady()
	}
	a.notify(daemon.SdNotifyReady)

	a.mounts.gate = a.mu.RLocker() // mount writers wait while a resolution holds the lock
	a.mounts.wrote = a.mountServed
	a.mounts.result = a.noteMount // metrics.go
	serveMetrics, err := a.openMetrics()
	if err != nil {
		return err
	}
	parts := []func(context.Context) error{
		func(ctx context.Context) error { return a.follow(ctx, snap.Rev) },
		a.watchKeyFile,
		func(ctx context.Context) error { return dirWatch.Run(ctx) },
		func(ctx context.Context) error { return a.serveWorkloads(ctx, socks.workload) },
		func(ctx context.Context) error { return a.serveAdmin(ctx, socks.admin) },
		a.mounts.Run,
		a.watchdog,
		a.trimMemory,
		a.notifyStopping,
		func(ctx context.Context) error { return a.reloadOnHUP(ctx, hup) },
		serveMetrics,
		a.runs.Run,
	}
	if socks.credentials != nil {
		parts = append(parts, func(ctx context.Context) error { return a.serveCredentials(ctx, socks.credentials) })
	}
	if followEngine != nil {
		parts = append(parts, followEngine)
	}
	return runAll(ctx, parts...)
}

// loadKeys finds the key ring: systemd's $CREDENTIALS_DIRECTORY/envlet.keyring
// when present (LoadCredentialEncrypted=), else the key file, created with a
// fresh key if it does not exist.
func (a *Agent) loadKeys() (*fetch.Keyring, error) {
	if dir := os.Getenv("CREDENTIALS_DIRECTORY"); dir != "" {
		b, err := os.ReadFile(filepath.Join(dir, "envlet.keyring"))
		if err == nil {
			k, err := fetch.KeyringFromBytes(b)
			clear(b)
			if err != nil {
				return nil, fmt.Errorf("load key ring from credentials: %w", err)
			}
			a.keyPath = filepath.Join(dir, "envlet.keyring")
			return k, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("read key ring credential: %w", err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(a.cfg.KeyFile), 0o700); err != nil {
		return nil, fmt.Errorf("create key dir: %w", err)
	}
	k, err := fetch.LoadKeyring(a.cfg.KeyFile, true)
	if err != nil {
		return nil, fmt.Errorf("load key ring: %w", err)
	}
	a.keyPath = a.cfg.KeyFile
	return k, nil
}

func (a *Agent) setPlatform() {
	for _, b := range a.platformBufs {
		b.Free()
	}
	a.platformBufs = nil
	l := layer{name: layerPlatform}
	for _, d := range a.cfg.Defaults {
		b := a.pool.Copy([]byte(d.Value))
		a.platformBufs = append(a.platformBufs, b)
		l.vars = append(l.vars, layerVar{name: d.Name, value: b.Bytes()})
	}
	a.platform = sortPlatform(l)
}

// applySnapshot replaces the model with a full read of the store. Called
// with a.mu held for writing. An API registration the read still holds
// replaces its workload as a change of it would (what it served and its
// env revision carry over, so a re-read that changes nothing notifies no
// watcher and leaves `workload list` as it was); one the read lacks is
// removed.
func (a *Agent) applySnapshot(s fetch.Snapshot) {
	a.model.free()
	a.model = newModel()
	t := newTouched()
	t.all = true
	for _, kv := range s.KVs {
		a.apply(fetch.Event{Key: kv.Key, Value: kv.Value, ModRev: kv.ModRev}, t)
	}
	for id, w := range a.workloads {
		if _, ok := a.model.workloads[id]; !ok && w.source == sourceAPI {
			a.removeWorkload(id, sourceAPI)
		}
	}
	a.setRev(s.Rev)
	a.resolveTouched(t)
	a.afterSnapshot()
}

// follow applies every committed batch to the model, then re-resolves the
// workloads it touched. A Reset batch (the store cannot replay: etcd
// compacted, or a reconnect after serving from the snapshot) or a reloaded
// key ring makes it re-read the whole store; batches the re-read already
// holds are skipped.
func (a *Agent) follow(ctx context.Context, after fetch.Revision) error {
	batches := a.backend.Watch(ctx, after)
	for {
		select {
		case b, ok := <-batches:
			if !ok {
				return ctx.Err()
			}
			if !b.Reset {
				a.mu.Lock()
				if b.Rev > a.model.rev {
					t := newTouched()
					for _, ev := range b.Events {
						a.apply(ev, t)
					}
					a.setRev(b.Rev)
					a.resolveTouched(t)
				}
				a.mu.Unlock()
				continue
			}
			a.log.Info("re-reading the whole store", "reason", "asked by the store: it cannot replay the changes since our revision (etcd compacted them), or it answers again after serving from the snapshot", "revision", b.Rev)
		case <-a.reread:
			a.log.Info("re-reading the whole store", "reason", "key ring reloaded")
		case <-ctx.Done():
			return ctx.Err()
		}
		snap, err := a.readStore(ctx, false)
		if err != nil {
			return fmt.Errorf("re-read store: %w", err)
		}
		a.mu.Lock()
		a.applySnapshot(snap)
		a.sweepTokens()
		a.mu.Unlock()
	}
}

// setRev moves the model's revision and wakes writers waiting for it.
// Called with a.mu held for writing.
func (a *Agent) setRev(r fetch.Revision) {
	a.model.rev = r
	close(a.revWait)
	a.revWait = make(chan struct{})
}

// waitRev blocks until the model has applied revision r, so a write is
// visible to the reads that follow it.
func (a *Agent) waitRev(ctx context.Context, r fetch.Revision) error {
	for {
		a.mu.RLock()
		cur, ch := a.model.rev, a.revWait
		a.mu.RUnlock()
		if cur >= r {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// listenUnix opens a Unix socket at path with mode, owned by gid when
// gid >= 0. A stale socket file from a previous run is replaced.
func listenUnix(path string, mode os.FileMode, gid int) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket dir: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	l.SetUnlinkOnClose(true)
	if gid >= 0 {
		if err := os.Chown(path, -1, gid); err != nil {
			l.Close()
			return nil, fmt.Errorf("chown %s: %w", path, err)
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return l, nil
}

// runAll runs every part until ctx ends or one fails; the first failure
// cancels the rest, and runAll returns it once all have stopped.
func runAll(ctx context.Context, parts ...func(context.Context) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for _, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p(ctx); err != nil {
				cancel(err)
			}
		}()
	}
	<-ctx.Done()
	wg.Wait()
	return context.Cause(ctx)
}
