package fetch

import (
	"context"
	"time"
)

// changesSource is a remote that can say what changed after a revision
// (Etcd.ChangesSince), so a restarted agent need not read the whole store.
type changesSource interface {
	ChangesSince(ctx context.Context, after Revision) ([]Batch, Revision, error)
}

// catchUp serves the first Snapshot of this process from the snapshot file
// plus what changed in the remote since the file's revision, when the
// remote can say (Etcd.ChangesSince: etcd still holds its history since the
// file's revision): the same data a whole read would give, for the cost of
// the writes since. It reports false, and
// changes nothing, when there is no usable file, the remote cannot say
// (compacted past the file, unavailable), or this is not the first read:
// the caller reads the whole prefix then.
func (m *Mirror) catchUp(ctx context.Context) (Snapshot, bool) {
	src, ok := m.inner.(changesSource)
	if !ok {
		return Snapshot{}, false
	}
	m.mu.Lock()
	if m.started {
		m.mu.Unlock()
		return Snapshot{}, false
	}
	fs, err := m.load()
	m.mu.Unlock()
	if err != nil {
		return Snapshot{}, false
	}
	start := time.Now()
	batches, rev, err := src.ChangesSince(ctx, fs.rev)
	if err != nil {
		return Snapshot{}, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started {
		return Snapshot{}, false // another Snapshot got there first
	}
	m.kvs = make(map[string]KV, fs.n)
	for _, kv := range fs.all() {
		m.kvs[kv.Key] = kv
	}
	m.rev = fs.rev
	for _, b := range batches {
		m.applyLocked(b)
	}
	m.rev = max(m.rev, rev)
	m.valid, m.degraded, m.readAt, m.dirty, m.started = true, false, start, true, true
	m.catchUps.Add(1)
	return m.snapshotLocked(), true
}
