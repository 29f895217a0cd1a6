package fetch

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

const (
	stateFileName = "state.enc"
	stateTempPfx  = "state.enc.tmp-"
	lockFileName  = "state.lock"
	stateMagic    = "ENVLETST"
	stateVersion  = 1
	stateAAD      = "envlet-state v1"
	// MaxKeyLen is the longest record key: its length is a u16 of the
	// state format.
	MaxKeyLen = math.MaxUint16
	// ringSize is how many committed batches a Local keeps for Watch.
	ringSize = 4096
	// minRecord is the smallest encoded record: str16, u64, bytes32.
	minRecord = 2 + 8 + 4
)

var errClosed = fmt.Errorf("local store is closed: %w", ErrUnavailable)

// Local is the embedded backend: the whole state in one encrypted file,
// rewritten atomically on every commit. It is safe for concurrent use by one
// process; a lock file keeps other processes out of its directory.
type Local struct {
	dir  string
	keys *Keyring
	lock *os.File // holds the flock while open
	dirf *os.File // the directory, for fsync after rename

	// sem admits one Commit at a time (a channel, so waiting honours ctx).
	sem chan struct{}

	mu       sync.Mutex // guards the fields below
	st       *state     // immutable once published
	ring     []Batch    // the last ringMax batches, oldest first, consecutive revisions ending at st.rev
	ringMax  int
	watchers map[*watcher]struct{}
	closed   bool
	done     chan struct{} // closed by Close
	wg       sync.WaitGroup
}

var _ Backend = (*Local)(nil)

// state is one revision of the store. It is never modified once built, so
// snapshots and batches may share its values.
type state struct {
	rev Revision
	kvs []KV // sorted by key, keys unique
}

func (s *state) get(key string) (KV, bool) {
	i, ok := slices.BinarySearchFunc(s.kvs, key, func(kv KV, k string) int { return strings.Compare(kv.Key, k) })
	if !ok {
		return KV{}, false
	}
	return s.kvs[i], true
}

type watcher struct {
	out   chan Batch
	wake  chan struct{} // capacity 1: "the queue may have grown"
	mu    sync.Mutex
	queue []Batch
}

func (w *watcher) push(b Batch) {
	w.mu.Lock()
	w.queue = append(w.queue, b)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// OpenLocal opens the store in dir, creating dir (0700) if needed. The
// outcomes:
//
//   - another process has the store open: an error, nothing touched.
//   - no state file: an empty store at revision 0; nothing is written
//     until the first Commit.
//   - a state file that keys opens: its state and revision.
//   - a state file that is not one, is of another format version, does not
//     decrypt with keys or does not decode: an error; the file is left
//     exactly as it is.
//
// Temp files that a crash left behind are removed in every case: a write is
// acknowledged only after its rename, so they never hold one.
func OpenLocal(dir string, keys *Keyring) (*Local, error) {
	if keys == nil {
		return nil, errors.New("open local store: no key ring")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open local store: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockFileName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open local store: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("open local store %s: in use by another process", dir)
		}
		return nil, fmt.Errorf("open local store %s: lock: %w", dir, err)
	}
	l, err := openLocked(dir, keys)
	if err != nil {
		lock.Close()
		return nil, err
	}
	l.lock = lock
	return l, nil
}

func openLocked(dir string, keys *Keyring) (*Local, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("open local store: %w", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), stateTempPfx) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return nil, fmt.Errorf("open local store: remove leftover temp file: %w", err)
			}
		}
	}
	path := filepath.Join(dir, stateFileName)
	st := &state{}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("open local store: %w", err)
	default:
		if st, err = decodeStateFile(keys, data); err != nil {
			return nil, fmt.Errorf("open local store: state file %s: %w", path, err)
		}
	}
	dirf, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open local store: %w", err)
	}
	return &Local{
		dir:      dir,
		keys:     keys,
		dirf:     dirf,
		sem:      make(chan struct{}, 1),
		st:       st,
		ringMax:  ringSize,
		watchers: map[*watcher]struct{}{},
		done:     make(chan struct{}),
	}, nil
}

// Snapshot returns the state at the latest acknowledged revision. The KVs
// slice is the caller's; the values are shared and must not be modified.
func (l *Local) Snapshot(ctx context.Context) (Snapshot, error) {
	if err := ctx.Err(); err != nil {
		return Snapshot{}, fmt.Errorf("snapshot: %w", err)
	}
	l.mu.Lock()
	st, closed := l.st, l.closed
	l.mu.Unlock()
	if closed {
		return Snapshot{}, fmt.Errorf("snapshot: %w", errClosed)
	}
	return Snapshot{Rev: st.rev, KVs: slices.Clone(st.kvs)}, nil
}

// Commit applies txn. The outcomes:
//
//   - an invalid txn (an empty key, a key over MaxKeyLen bytes, a key put
//     or deleted twice): an error, nothing written.
//   - a Cond does not hold: an error that errors.Is ErrConflict, nothing
//     written.
//   - no Op changes anything (no ops, or only deletes of absent keys): the
//     current revision, nothing written.
//   - otherwise the new revision, one above the last, once the whole state
//     is on disk (temp file, fsync, rename, fsync of the directory); every
//     put key gets that ModRev, and watchers get the batch.
//   - the write fails: an error; the store's state in memory is unchanged.
//     On disk the old state remains, unless only the last fsync of the
//     directory failed, when the new file may or may not survive a crash,
//     like any write that was not acknowledged. The next Commit rewrites
//     the whole state either way.
//   - ctx ends while waiting for another Commit, or before the write: its
//     error, nothing written.
//   - the store is closed: an error that errors.Is ErrUnavailable.
//
// Commit copies the values; the caller may reuse txn afterwards.
func (l *Local) Commit(ctx context.Context, txn Txn) (Revision, error) {
	if err := validateOps(txn.Ops); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	select {
	case l.sem <- struct{}{}:
	case <-ctx.Done():
		return 0, fmt.Errorf("commit: %w", ctx.Err())
	}
	defer func() { <-l.sem }()
	l.mu.Lock()
	cur, closed := l.st, l.closed
	l.mu.Unlock()
	if closed {
		return 0, fmt.Errorf("commit: %w", errClosed)
	}
	for _, c := range txn.Conds {
		kv, ok := cur.get(c.Key)
		if c.ModRev == 0 && ok {
			return 0, fmt.Errorf("commit: %s exists: %w", c.Key, ErrConflict)
		}
		if c.ModRev != 0 && (!ok || kv.ModRev != c.ModRev) {
			return 0, fmt.Errorf("commit: %s is not at revision %d: %w", c.Key, c.ModRev, ErrConflict)
		}
	}
	next, events := cur.apply(txn.Ops)
	if len(events) == 0 {
		return cur.rev, nil
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	if err := l.write(next); err != nil {
		return 0, fmt.Errorf("commit: write state: %w", err)
	}
	b := Batch{Rev: next.rev, Events: events}
	l.mu.Lock()
	l.st = next
	l.ring = append(l.ring, b)
	if len(l.ring) > l.ringMax {
		l.ring[0] = Batch{}
		l.ring = l.ring[1:]
	}
	for w := range l.watchers {
		w.push(b)
	}
	l.mu.Unlock()
	return next.rev, nil
}

func validateOps(ops []Op) error {
	seen := make(map[string]struct{}, len(ops))
	for _, op := range ops {
		switch {
		case op.Key == "":
			return errors.New("empty key")
		case len(op.Key) > MaxKeyLen:
			return fmt.Errorf("key longer than %d bytes", MaxKeyLen)
		case uint64(len(op.Value)) > math.MaxUint32:
			return fmt.Errorf("value of %s larger than 4 GiB", op.Key)
		}
		if _, dup := seen[op.Key]; dup {
			return fmt.Errorf("%s written twice in one transaction", op.Key)
		}
		seen[op.Key] = struct{}{}
	}
	return nil
}

// apply returns the state after ops at revision s.rev+1 and the events that
// changed something, in the order of ops. Values are copied into one new
// buffer. ops hold unique keys.
func (s *state) apply(ops []Op) (*state, []Event) {
	rev := s.rev + 1
	size := 0
	for _, op := range ops {
		if !op.Delete {
			size += len(op.Value)
		}
	}
	buf := make([]byte, 0, size)
	// byOp[i] is the event of ops[i], if it changes something.
	byOp := make([]*Event, len(ops))
	order := make([]int, len(ops))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(ops[a].Key, ops[b].Key) })

	kvs := make([]KV, 0, len(s.kvs)+len(ops))
	i := 0
	for _, oi := range order {
		op := ops[oi]
		for i < len(s.kvs) && s.kvs[i].Key < op.Key {
			kvs = append(kvs, s.kvs[i])
			i++
		}
		exists := i < len(s.kvs) && s.kvs[i].Key == op.Key
		if exists {
			i++ // replaced or deleted
		}
		if op.Delete {
			if exists {
				byOp[oi] = &Event{Key: op.Key, ModRev: rev, Deleted: true}
			}
			continue
		}
		start := len(buf)
		buf = append(buf, op.Value...)
		v := buf[start:len(buf):len(buf)]
		kvs = append(kvs, KV{Key: op.Key, Value: v, ModRev: rev})
		byOp[oi] = &Event{Key: op.Key, Value: v, ModRev: rev}
	}
	kvs = append(kvs, s.kvs[i:]...)
	var events []Event
	for _, e := range byOp {
		if e != nil {
			events = append(events, *e)
		}
	}
	return &state{rev: rev, kvs: kvs}, events
}

// write puts st on disk atomically and durably.
func (l *Local) write(st *state) error {
	payload := encodePayload(st)
	file := make([]byte, 0, len(stateMagic)+1+1+len(l.keys.PrimaryID())+nonceSize+len(payload)+tagSize)
	file = append(file, stateMagic...)
	file = append(file, stateVersion)
	file = l.keys.Seal(file, payload, stateAAD)

	f, err := os.CreateTemp(l.dir, stateTempPfx+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	renamed := false
	defer func() {
		if !renamed {
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(file); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(l.dir, stateFileName)); err != nil {
		return err
	}
	renamed = true
	return l.dirf.Sync()
}

// encodePayload encodes st: u64 revision, u32 count, then per record (sorted
// by key) str16 key, u64 modrev, bytes32 value; integers big endian.
func encodePayload(st *state) []byte {
	size := 8 + 4
	for _, kv := range st.kvs {
		size += minRecord + len(kv.Key) + len(kv.Value)
	}
	b := make([]byte, 0, size)
	b = binary.BigEndian.AppendUint64(b, uint64(st.rev))
	b = binary.BigEndian.AppendUint32(b, uint32(len(st.kvs)))
	for _, kv := range st.kvs {
		b = binary.BigEndian.AppendUint16(b, uint16(len(kv.Key)))
		b = append(b, kv.Key...)
		b = binary.BigEndian.AppendUint64(b, uint64(kv.ModRev))
		b = binary.BigEndian.AppendUint32(b, uint32(len(kv.Value)))
		b = append(b, kv.Value...)
	}
	return b
}

// decodeStateFile checks the header of a state file, decrypts its payload
// and decodes it.
func decodeStateFile(keys *Keyring, data []byte) (*state, error) {
	if len(data) < len(stateMagic)+1 || string(data[:len(stateMagic)]) != stateMagic {
		return nil, errors.New("not an envlet state file")
	}
	if v := data[len(stateMagic)]; v != stateVersion {
		return nil, fmt.Errorf("unsupported format version %d", v)
	}
	payload, err := keys.Open(nil, data[len(stateMagic)+1:], stateAAD)
	if err != nil {
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	return decodePayload(payload)
}

var errTruncated = errors.New("decode state: truncated")

// decodePayload decodes what encodePayload made, strictly: keys non-empty,
// sorted and unique, ModRevs between 1 and the revision, no trailing bytes.
// Values alias b.
func decodePayload(b []byte) (*state, error) {
	if len(b) < 12 {
		return nil, errTruncated
	}
	rev := binary.BigEndian.Uint64(b)
	count := binary.BigEndian.Uint32(b[8:])
	b = b[12:]
	if rev > math.MaxInt64 {
		return nil, errors.New("decode state: revision out of range")
	}
	st := &state{rev: Revision(rev)}
	st.kvs = make([]KV, 0, min(int(count), len(b)/minRecord))
	for n := uint32(0); n < count; n++ {
		if len(b) < 2 {
			return nil, errTruncated
		}
		kl := int(binary.BigEndian.Uint16(b))
		b = b[2:]
		if len(b) < kl+8+4 {
			return nil, errTruncated
		}
		key := string(b[:kl])
		modRev := binary.BigEndian.Uint64(b[kl:])
		vl := uint64(binary.BigEndian.Uint32(b[kl+8:]))
		b = b[kl+8+4:]
		if uint64(len(b)) < vl {
			return nil, errTruncated
		}
		val := b[:vl:vl]
		b = b[vl:]
		switch {
		case kl == 0:
			return nil, fmt.Errorf("decode state: record %d has an empty key", n)
		case len(st.kvs) > 0 && cmp.Compare(st.kvs[len(st.kvs)-1].Key, key) >= 0:
			return nil, fmt.Errorf("decode state: record %d out of order", n)
		case modRev == 0 || modRev > rev:
			return nil, fmt.Errorf("decode state: record %d has revision %d outside 1..%d", n, modRev, rev)
		}
		st.kvs = append(st.kvs, KV{Key: key, Value: val, ModRev: Revision(modRev)})
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("decode state: %d trailing bytes", len(b))
	}
	return st, nil
}

// Watch delivers, in order, every batch committed with Rev > after: first
// those already in the store's ring of the last 4096 batches (so a watcher
// that took a Snapshot at revision R and calls Watch(ctx, R) misses
// nothing), then each new one as it is committed. When the ring does not
// reach back to after (it is empty after a reopen), or after is ahead of
// the store, the first batch is a Reset at the current revision: read a new
// Snapshot. Each watcher has its own unbounded queue, so a slow reader never
// holds up Commit. The channel is closed when ctx ends or the store closes.
func (l *Local) Watch(ctx context.Context, after Revision) <-chan Batch {
	w := &watcher{out: make(chan Batch), wake: make(chan struct{}, 1)}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		close(w.out)
		return w.out
	}
	cur := l.st.rev
	switch {
	case after == cur:
	case after > cur || len(l.ring) == 0 || l.ring[0].Rev > after+1:
		w.queue = []Batch{{Rev: cur, Reset: true}}
	default:
		// The ring holds consecutive revisions ending at cur.
		first := len(l.ring) - int(cur-after)
		w.queue = slices.Clone(l.ring[first:])
	}
	l.watchers[w] = struct{}{}
	l.wg.Add(1)
	l.mu.Unlock()
	go l.pump(ctx, w)
	return w.out
}

func (l *Local) pump(ctx context.Context, w *watcher) {
	defer l.wg.Done()
	defer close(w.out)
	defer func() {
		l.mu.Lock()
		delete(l.watchers, w)
		l.mu.Unlock()
	}()
	for {
		w.mu.Lock()
		q := w.queue
		w.queue = nil
		w.mu.Unlock()
		for _, b := range q {
			select {
			case w.out <- b:
			case <-ctx.Done():
				return
			case <-l.done:
				return
			}
		}
		select {
		case <-w.wake:
		case <-ctx.Done():
			return
		case <-l.done:
			return
		}
	}
}

// Close waits for a Commit in progress, closes every Watch channel and
// releases the store's directory for another process. Later calls of any
// method fail with ErrUnavailable (Watch returns a closed channel); Close
// itself may be called again.
func (l *Local) Close() error {
	l.sem <- struct{}{}
	defer func() { <-l.sem }()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.done)
	l.mu.Unlock()
	l.wg.Wait()
	err := l.dirf.Close()
	if cerr := l.lock.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("close local store: %w", err)
	}
	return nil
}
