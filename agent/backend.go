package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/envlet/envlet/fetch"
)

// OpenStore opens the store cfg names, as it is: etcd when endpoints are
// given, else the local encrypted store in cfg.StateDir. The agent wraps an
// etcd store in a fetch.Mirror; `envletd key reencrypt` uses it bare.
func OpenStore(cfg Config, keys *fetch.Keyring) (fetch.Backend, error) {
	if len(cfg.EtcdEndpoints) > 0 {
		e, err := fetch.OpenEtcd(fetch.EtcdConfig{
			Endpoints: cfg.EtcdEndpoints,
			Prefix:    cfg.EtcdPrefix,
			CAFile:    cfg.EtcdCAFile,
			CertFile:  cfg.EtcdCertFile,
			KeyFile:   cfg.EtcdKeyFile,
			Timeout:   cfg.EtcdTimeout,
			Observe:   cfg.etcdObserve,
		}, keys)
		if err != nil {
			return nil, err
		}
		return e, nil
	}
	b, err := fetch.OpenLocal(cfg.StateDir, keys)
	if err != nil {
		return nil, fmt.Errorf("open local store: %w", err)
	}
	return b, nil
}

// backendName is what `envlet status` and the log call the store.
func (a *Agent) backendName() string {
	if len(a.cfg.EtcdEndpoints) > 0 {
		return "etcd"
	}
	return "local"
}

// openBackend opens the configured source: etcd (behind a Mirror that keeps
// the encrypted last-read snapshot in the state dir, so the agent can start
// and serve while etcd is away) when endpoints are given, else the local
// encrypted store.
func (a *Agent) openBackend(keys *fetch.Keyring) (fetch.Backend, error) {
	b, err := OpenStore(a.cfgObservingEtcd(), keys) // metrics.go
	if l, ok := b.(*fetch.Local); ok && err == nil {
		if r := l.Recovery(); r.TornBytes > 0 {
			a.log.Warn("local store: cut an unfinished commit off the end of its log (a crash interrupted its write; it was never acknowledged)", "bytes", r.TornBytes, "state_dir", a.cfg.StateDir)
		}
	}
	if err != nil || len(a.cfg.EtcdEndpoints) == 0 {
		return b, err
	}
	ident := "etcd " + a.cfg.EtcdPrefix
	m := fetch.NewMirror(b, filepath.Join(a.cfg.StateDir, fetch.SnapshotFileName), ident, keys)
	a.mirror = m
	return m, nil
}

// readStore reads the whole store: for the first fill of the cache, and
// for a re-read. While the store is unavailable and there is nothing to
// serve from (no snapshot file), it waits, retrying, rather than fail: the
// agent goes on (or starts) as soon as etcd answers.
func (a *Agent) readStore(ctx context.Context, first bool) (fetch.Snapshot, error) {
	backoff := 500 * time.Millisecond
	for {
		snap, err := a.backend.Snapshot(ctx)
		if err == nil || !errors.Is(err, fetch.ErrUnavailable) || ctx.Err() != nil {
			return snap, err
		}
		if first {
			a.log.Warn("waiting for the store: it is unavailable and there is no snapshot to serve from; serving starts when it answers", "backend", a.backendName(), "error", err)
		} else {
			a.log.Warn("waiting for the store to re-read it; serving what the agent holds meanwhile", "backend", a.backendName(), "error", err)
		}
		select {
		case <-ctx.Done():
			return fetch.Snapshot{}, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// CodeKeyMissing refuses workloads while the store holds records sealed
// with a key this node's key ring lacks (its key ring file is out of date):
// the agent serves nothing rather than environments missing variables.
const CodeKeyMissing = "KEY_MISSING"

// missingKeys refuses to serve while records do not open for want of a
// key; nil when every record opens.
func (a *Agent) missingKeys() *Error {
	if a.mirror == nil {
		return nil
	}
	ids := a.mirror.MissingKeys()
	if len(ids) == 0 {
		return nil
	}
	return errorf(CodeKeyMissing, "the store holds records sealed with key %s, which this node's key ring lacks: copy the key ring file from a node that has it (the agent reloads it)", strings.Join(ids, ", "))
}

// backendStatus is the backend part of `envlet status`.
func (a *Agent) backendStatus() map[string]any {
	out := map[string]any{"backend": a.backendName(), "connected": true, "stale_seconds": 0}
	a.audit.status(out)
	if a.mirror == nil {
		return out
	}
	st := a.mirror.Status()
	out["connected"] = st.Connected
	if !st.Connected {
		stale := int64(-1) // never known current
		if !st.CurrentAt.IsZero() {
			stale = int64(time.Since(st.CurrentAt).Seconds())
		}
		out["stale_seconds"] = stale
	}
	out["serving_snapshot"] = st.FromSnapshot
	if len(st.UnknownKeyIDs) > 0 {
		out["missing_keys"] = strings.Join(st.UnknownKeyIDs, ",")
	}
	if st.SaveError != "" {
		out["snapshot_error"] = st.SaveError
	}
	return out
}

// watchKeyFile reloads the key ring when its file changes (rotation: a new
// key added, promoted or removed), then re-reads the store so records that
// did not open before are applied. It polls: the file is replaced by
// rename, which a stat sees wherever it lives.
func (a *Agent) watchKeyFile(ctx context.Context) error {
	if a.keyPath == "" {
		return nil
	}
	stamp := func() string {
		fi, err := os.Stat(a.keyPath)
		if err != nil {
			return ""
		}
		var ino uint64
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino = st.Ino
		}
		return fmt.Sprintf("%d %d %d", ino, fi.Size(), fi.ModTime().UnixNano())
	}
	last := stamp()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		s := stamp()
		if s == last || s == "" {
			continue
		}
		last = s
		k, err := fetch.LoadKeyring(a.keyPath, false)
		if err != nil {
			a.log.Error("key ring file changed but does not load; keeping the old ring", "path", a.keyPath, "error", err)
			continue
		}
		a.keys.Replace(k)
		a.log.Info("key ring reloaded", "path", a.keyPath, "primary", k.PrimaryID(), "keys", strings.Join(k.IDs(), ","))
		select {
		case a.reread <- struct{}{}:
		default:
		}
	}
}

// storageError words a write that failed on the disk: STORAGE_FULL for a
// full file system (or quota), STORAGE_READ_ONLY for a read-only one (a
// remount, or the kernel's after an I/O error), STORAGE_FAILED for an I/O
// error; nil for any other error. what names the file ("the store
// (/var/lib/envlet)"), outcome what became of the request. The agent
// serves on from memory meanwhile, and the next write after the fault is
// cleared works without a restart.
func storageError(err error, what, outcome string) *Error {
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return errorf(CodeStorageFull, "the file system holding %s is full: %s. Free space there (workloads are still served from memory); writes work again once there is room, without a restart", what, outcome)
	case errors.Is(err, syscall.EROFS):
		return errorf(CodeStorageReadOnly, "the file system holding %s is read-only (remounted read-only, or by the kernel after an I/O error: see dmesg): %s. Make it writable again (workloads are still served from memory)", what, outcome)
	case errors.Is(err, syscall.EIO):
		return errorf(CodeStorageFailed, "writing %s failed with an I/O error (see dmesg): %s. Check the disk (workloads are still served from memory)", what, outcome)
	}
	return nil
}
