package fetch

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Mirror wraps a remote backend (etcd) with a copy of what it last read,
// kept in memory and, sealed with the key ring, in a snapshot file, so an
// agent restarted while the remote is unreachable serves what it last knew
// and says how old that is.
//
// The file, DIR/snapshot.enc, is written atomically (temp file, fsync,
// rename, fsync of the directory) at most once per saveInterval after a
// change, and on Close:
//
//	"ENVLETSN"   8 bytes, magic
//	u8           format version, 1
//	sealed       Keyring.Seal(payload, aad "envlet-snapshot v1")
//
// payload: str16 ident (which store it mirrors: backend, prefix), i64
// unix nanoseconds when its data was last known current, then the local
// store's payload (u64 revision, u32 count, records). The values inside are
// the records as stored, sealed by the agent: the file holds nothing in
// clear, not even the record keys.
type Mirror struct {
	inner  Backend
	health func() Health // the inner backend's, if it has one
	path   string
	ident  string
	keys   *Keyring

	mu       sync.Mutex
	kvs      map[string]KV
	rev      Revision
	valid    bool      // kvs is a read of the remote plus every batch since
	started  bool      // a Snapshot has served (remote or file)
	tail     []Batch   // batches seen after a Reset, before the re-read
	degraded bool      // kvs came from the file; Watch re-reads the remote first
	fileAt   time.Time // when the file's data was last known current
	readAt   time.Time // start of the last successful remote Snapshot
	pending  *Snapshot // a fresh read that Watch made for the reader's next Snapshot
	dirty    bool
	missing  struct { // MissingKeys's answer, for this revision and ring
		valid bool
		rev   Revision
		ring  *ring
		n     int
		ids   []string
	}
	saveErr   error
	lastSaved time.Time

	// fullReads and catchUps count the remote reads of this mirror: whole
	// reads of the prefix, and starts made current from the file plus
	// what changed since (catchup.go).
	fullReads, catchUps atomic.Int64

	saveInterval time.Duration
	done         chan struct{}
	closeOnce    sync.Once
	wg           sync.WaitGroup
}

var _ Backend = (*Mirror)(nil)

const (
	snapMagic   = "ENVLETSN"
	snapVersion = 1
	snapAAD     = "envlet-snapshot v1"
	// SnapshotFileName is the mirror's file in the agent's state dir.
	SnapshotFileName = "snapshot.enc"
)

// Status is what a Mirror reports for `envlet status`.
type Status struct {
	// Connected: the remote answers and the data is a live read of it.
	Connected bool
	// FromSnapshot: the data came from the snapshot file and the remote
	// has not been read since this start.
	FromSnapshot bool
	// CurrentAt is when the data was last known current (zero: never).
	CurrentAt time.Time
	// Rev is the revision of the data held.
	Rev Revision
	// UnknownKeyIDs lists the ids of keys that sealed some record but are
	// not in the key ring: this node's key ring file is out of date.
	UnknownKeyIDs []string
	// SaveError is why the last write of the snapshot file failed ("": it
	// did not).
	SaveError string
}

// NewMirror wraps inner; the snapshot file is path, ident names the store
// (a file of another store is not served). It reads nothing yet: the first
// Snapshot reads the remote, or the file when the remote is unavailable.
// inner's Health is used when it has one (Etcd does).
func NewMirror(inner Backend, path, ident string, keys *Keyring) *Mirror {
	m := &Mirror{
		inner:        inner,
		path:         path,
		ident:        ident,
		keys:         keys,
		kvs:          map[string]KV{},
		saveInterval: time.Second,
		done:         make(chan struct{}),
	}
	if h, ok := inner.(interface{ Health() Health }); ok {
		m.health = h.Health
	}
	m.wg.Add(1)
	go m.saver()
	return m
}

// Snapshot reads the remote. The outcomes:
//
//   - the remote answers: its snapshot, which the mirror now holds.
//   - the remote is unavailable and the mirror holds a live read (the
//     agent re-reads while running): that, at its revision; the watch goes
//     on from there.
//   - the remote is unavailable at the first read of this process: the
//     snapshot file, if there is one of this store that opens with the key
//     ring (Status says FromSnapshot and how old it is); Watch then reads
//     the remote again as soon as it answers and delivers a Reset.
//   - else an error that errors.Is ErrUnavailable, saying also why the
//     file could not serve.
func (m *Mirror) Snapshot(ctx context.Context) (Snapshot, error) {
	m.mu.Lock()
	if p := m.pending; p != nil {
		m.pending = nil
		m.mu.Unlock()
		return *p, nil
	}
	m.mu.Unlock()
	start := time.Now()
	if s, ok := m.catchUp(ctx); ok {
		return s, nil
	}
	s, err := m.inner.Snapshot(ctx)
	m.fullReads.Add(1)
	if err == nil {
		m.mu.Lock()
		m.replace(s, start)
		m.mu.Unlock()
		return s, nil
	}
	if !errors.Is(err, ErrUnavailable) {
		return Snapshot{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.valid || m.degraded {
		return m.snapshotLocked(), nil
	}
	if m.started {
		// Held data that a Reset made incomplete: wait for the remote.
		return Snapshot{}, err
	}
	fs, fileErr := m.load()
	if fileErr != nil {
		return Snapshot{}, fmt.Errorf("%w; and the last-read snapshot cannot serve: %v", err, fileErr)
	}
	m.kvs = make(map[string]KV, fs.n)
	for _, kv := range fs.all() {
		m.kvs[kv.Key] = kv
	}
	m.rev, m.degraded, m.started = fs.rev, true, true
	return m.snapshotLocked(), nil
}

// replace makes s the held data, read at start. Called with m.mu held.
func (m *Mirror) replace(s Snapshot, start time.Time) {
	if m.valid && !m.degraded && m.rev >= s.Rev {
		// The watch already brought the held data past this read.
		m.readAt = start
		return
	}
	m.kvs = make(map[string]KV, len(s.KVs))
	for _, kv := range s.KVs {
		m.kvs[kv.Key] = kv
	}
	m.rev, m.valid, m.degraded, m.readAt, m.dirty, m.started = s.Rev, true, false, start, true, true
	for _, b := range m.tail {
		m.applyLocked(b)
	}
	m.tail = nil
}

// applyLocked folds a batch newer than the held data into it. Called with
// m.mu held.
func (m *Mirror) applyLocked(b Batch) {
	if b.Rev <= m.rev {
		return
	}
	for _, ev := range b.Events {
		if ev.Deleted {
			delete(m.kvs, ev.Key)
		} else {
			m.kvs[ev.Key] = KV{Key: ev.Key, Value: ev.Value, ModRev: ev.ModRev}
		}
	}
	m.rev, m.dirty = b.Rev, true
}

func (m *Mirror) snapshotLocked() Snapshot {
	s := Snapshot{Rev: m.rev, KVs: make([]KV, 0, len(m.kvs))}
	for _, kv := range m.kvs {
		s.KVs = append(s.KVs, kv)
	}
	slices.SortFunc(s.KVs, func(a, b KV) int { return cmp.Compare(a.Key, b.Key) })
	return s
}

// Commit is the remote's.
func (m *Mirror) Commit(ctx context.Context, txn Txn) (Revision, error) {
	return m.inner.Commit(ctx, txn)
}

// Watch delivers the remote's batches after `after`, and keeps the held
// data and the file up to date with them. When the last Snapshot came from
// the file, Watch first reads the remote again, retrying until it answers,
// and delivers a Reset: the reader's next Snapshot returns that read, and
// the batches after it follow.
func (m *Mirror) Watch(ctx context.Context, after Revision) <-chan Batch {
	return runWatch(ctx, &m.wg, m.done, make(chan Batch), func(ctx context.Context, send func(Batch) bool) {
		m.watch(ctx, after, send)
	})
}

func (m *Mirror) watch(ctx context.Context, after Revision, send func(Batch) bool) {
	m.mu.Lock()
	degraded := m.degraded
	m.mu.Unlock()
	if degraded {
		s, ok := m.reread(ctx)
		if !ok {
			return
		}
		if !send(Batch{Rev: s.Rev, Reset: true}) {
			return
		}
		after = s.Rev
	}
	for b := range m.inner.Watch(ctx, after) {
		m.mu.Lock()
		switch {
		case b.Reset:
			// The held data misses what was compacted away, until the
			// reader's re-read; keep what follows for then.
			m.valid, m.tail = false, nil
		case m.valid:
			m.applyLocked(b)
		default:
			m.tail = append(m.tail, b)
		}
		m.mu.Unlock()
		if !send(b) {
			return
		}
	}
}

// reread reads the remote until it answers (or ctx ends), makes the read
// the held data and leaves it for the reader's next Snapshot.
func (m *Mirror) reread(ctx context.Context) (Snapshot, bool) {
	backoff := 200 * time.Millisecond
	for {
		if m.health != nil && !m.health().Connected {
			// Ask only once the probe reaches the remote: a read of an
			// unreachable etcd takes its whole timeout.
			select {
			case <-ctx.Done():
				return Snapshot{}, false
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		start := time.Now()
		s, err := m.inner.Snapshot(ctx)
		if err == nil {
			m.mu.Lock()
			m.replace(s, start)
			m.pending = &s
			m.mu.Unlock()
			return s, true
		}
		select {
		case <-ctx.Done():
			return Snapshot{}, false
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// Status reports the link to the remote and the age of the held data.
func (m *Mirror) Status() Status {
	var h Health
	if m.health != nil {
		h = m.health()
	} else {
		h = Health{Connected: true, CurrentAt: time.Now()}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st := Status{Connected: h.Connected && m.valid && !m.degraded, FromSnapshot: m.degraded, Rev: m.rev}
	st.CurrentAt = m.currentAtLocked(h)
	if m.saveErr != nil {
		st.SaveError = m.saveErr.Error()
	}
	st.UnknownKeyIDs = m.missingLocked()
	return st
}

// MissingKeys returns the ids of keys that sealed a record held but are not
// in the key ring (sorted; nil when every record's key is there). It is
// cheap to call often: the answer is kept until the data or the ring
// changes.
func (m *Mirror) MissingKeys() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.missingLocked()
}

func (m *Mirror) missingLocked() []string {
	r := m.keys.r.Load()
	if m.missing.valid && m.missing.rev == m.rev && m.missing.ring == r && m.missing.n == len(m.kvs) {
		return m.missing.ids
	}
	unknown := map[string]bool{}
	for _, kv := range m.kvs {
		if id, ok := SealedKeyID(kv.Value); ok && !unknown[id] && r.byID[id] == nil {
			unknown[id] = true
		}
	}
	var ids []string
	for id := range unknown {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	m.missing.valid, m.missing.rev, m.missing.ring, m.missing.n, m.missing.ids = true, m.rev, r, len(m.kvs), ids
	return ids
}

// currentAtLocked is when the held data was last known current: the file's
// time while serving from it, else the later of the last read and the last
// successful probe of the remote.
func (m *Mirror) currentAtLocked(h Health) time.Time {
	if m.degraded {
		return m.fileAt
	}
	t := m.readAt
	if m.valid && h.CurrentAt.After(t) {
		t = h.CurrentAt
	}
	return t
}

// saver writes the file at most once per saveInterval while the held data
// changes.
func (m *Mirror) saver() {
	defer m.wg.Done()
	t := time.NewTicker(m.saveInterval)
	defer t.Stop()
	for {
		select {
		case <-m.done:
			return
		case <-t.C:
			m.save(false)
		}
	}
}

// save writes the held data to the file if it changed (or, with force, if
// it is live and the remote has been reached since: its currency moved).
func (m *Mirror) save(force bool) {
	var h Health
	if m.health != nil {
		h = m.health()
	}
	m.mu.Lock()
	if !m.valid || m.degraded || (!m.dirty && !force) {
		m.mu.Unlock()
		return
	}
	st := newState(m.rev, m.snapshotLocked().KVs)
	at := m.currentAtLocked(h)
	m.dirty = false
	m.mu.Unlock()

	err := m.write(st, at)
	m.mu.Lock()
	m.saveErr = err
	if err != nil {
		m.dirty = true
	} else {
		m.lastSaved = time.Now()
	}
	m.mu.Unlock()
}

func (m *Mirror) write(st *state, at time.Time) error {
	body := encodePayload(st)
	payload := make([]byte, 0, 2+len(m.ident)+8+len(body))
	payload = binary.BigEndian.AppendUint16(payload, uint16(len(m.ident)))
	payload = append(payload, m.ident...)
	payload = binary.BigEndian.AppendUint64(payload, uint64(at.UnixNano()))
	payload = append(payload, body...)
	file := append([]byte(snapMagic), snapVersion)
	file = m.keys.Seal(file, payload, snapAAD)
	return replaceFile("write snapshot", m.path, file, nil)
}

// replaceFile puts data in path atomically: a temp file beside it (mode
// 0600), which prep (when not nil) may change first, is written, synced
// and renamed over path, and the directory is synced. A reader sees the
// old file or the new one, never a part. Errors begin with op; those after
// the temp file was made and prepared name path too.
func replaceFile(op, path string, data []byte, prep func(*os.File) error) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*") // mode 0600
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	if prep != nil {
		if err := prep(f); err != nil {
			f.Close()
			return fmt.Errorf("%s: %w", op, err)
		}
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, path, err)
	}
	return nil
}

// load reads the file: its state, and sets m.fileAt. Called with m.mu held.
func (m *Mirror) load() (*state, error) {
	data, err := os.ReadFile(m.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no snapshot file %s yet (the agent never read the store)", m.path)
	}
	if err != nil {
		return nil, fmt.Errorf("read snapshot: %w", err)
	}
	ident, at, st, err := decodeSnapshotFile(m.keys, data)
	if err != nil {
		return nil, fmt.Errorf("snapshot file %s: %w", m.path, err)
	}
	if ident != m.ident {
		return nil, fmt.Errorf("snapshot file %s is of another store (%s), not %s", m.path, ident, m.ident)
	}
	m.fileAt = at
	return st, nil
}

// decodeSnapshotFile checks the header, decrypts and decodes a snapshot
// file strictly.
func decodeSnapshotFile(keys *Keyring, data []byte) (ident string, at time.Time, st *state, err error) {
	if len(data) < len(snapMagic)+1 || string(data[:len(snapMagic)]) != snapMagic {
		return "", time.Time{}, nil, errors.New("not an envlet snapshot file")
	}
	if v := data[len(snapMagic)]; v != snapVersion {
		return "", time.Time{}, nil, fmt.Errorf("unsupported format version %d", v)
	}
	p, err := keys.Open(nil, data[len(snapMagic)+1:], snapAAD)
	if err != nil {
		return "", time.Time{}, nil, fmt.Errorf("decrypt: %w", err)
	}
	if len(p) < 2 {
		return "", time.Time{}, nil, errTruncated
	}
	n := int(binary.BigEndian.Uint16(p))
	if len(p) < 2+n+8 {
		return "", time.Time{}, nil, errTruncated
	}
	ident = string(p[2 : 2+n])
	at = time.Unix(0, int64(binary.BigEndian.Uint64(p[2+n:])))
	st, err = decodePayload(p[2+n+8:])
	if err != nil {
		return "", time.Time{}, nil, err
	}
	return ident, at, st, nil
}

// Close writes the held data one last time, then closes the remote.
func (m *Mirror) Close() error {
	var err error
	m.closeOnce.Do(func() {
		close(m.done)
		m.wg.Wait()
		m.save(true)
		err = m.inner.Close()
	})
	return err
}
