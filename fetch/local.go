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
	"sort"
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
	// chunkMax bounds a run of the in-memory state (see state); chunkFill
	// is how full a run is made when the state is built whole.
	chunkMax  = 512
	chunkFill = chunkMax / 2
)

var errClosed = fmt.Errorf("local store is closed: %w", ErrUnavailable)

// Local is the embedded backend: the state in one encrypted file, and every
// commit since that file was written appended to an encrypted log beside it
// (locallog.go). A commit costs one append and one fdatasync, whatever the
// size of the store; the state file is rewritten (the log compacted into it)
// only when the log outgrows it. It is safe for concurrent use by one
// process; a lock file keeps other processes out of its directory.
type Local struct {
	dir  string
	keys *Keyring
	lock *os.File // holds the flock while open
	dirf *os.File // the directory, for fsync after rename

	// sem admits one writer (a Commit writing its group, or Compact) at a
	// time (a channel, so waiting honours ctx). It guards the log fields
	// below.
	sem chan struct{}
	// qmu guards queue: the Commits waiting to be written (group commit).
	qmu   sync.Mutex
	queue []*pendingCommit

	log        *os.File // DIR/state.log, O_APPEND; nil until the first commit creates it
	logSize    int64    // bytes of log known good: header and whole records
	logBroken  bool     // an append or a log reset failed: the next Commit rewrites the state file and starts a new log
	stateSize  int64    // size of the state file last read or written; 0 if none
	compactMin int64    // the log is compacted once it holds more than max(compactMin, stateSize) bytes of records
	compactAt  int64    // after a failed compaction: the log size to try again at
	recovery   Recovery
	hook       func(point string) // tests: called at each step of a write (crash_test.go)
	groupLen   int                // tests: records in the group being written

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
// snapshots, batches and later states share its runs and values.
//
// The records are kept sorted by key in runs (chunks) of at most chunkMax:
// a commit copies the list of runs and rebuilds only the runs it touches,
// so its cost in memory does not grow with the store either.
type state struct {
	rev    Revision
	chunks [][]KV // each sorted and non-empty, runs in key order, keys unique
	n      int    // records in all runs
}

// newState builds a state from records sorted by key, keys unique. The runs
// alias kvs.
func newState(rev Revision, kvs []KV) *state {
	st := &state{rev: rev, n: len(kvs)}
	for len(kvs) > 0 {
		n := min(len(kvs), chunkFill)
		st.chunks = append(st.chunks, kvs[:n:n])
		kvs = kvs[n:]
	}
	return st
}

// all returns every record in key order, in a new slice.
func (s *state) all() []KV {
	kvs := make([]KV, 0, s.n)
	for _, c := range s.chunks {
		kvs = append(kvs, c...)
	}
	return kvs
}

// chunkOf returns the index of the run that holds key or would: the first
// run whose last key is not below key, or len(s.chunks) if key is above
// every key.
func (s *state) chunkOf(key string) int {
	return sort.Search(len(s.chunks), func(i int) bool {
		c := s.chunks[i]
		return c[len(c)-1].Key >= key
	})
}

func (s *state) get(key string) (KV, bool) {
	ci := s.chunkOf(key)
	if ci == len(s.chunks) {
		return KV{}, false
	}
	c := s.chunks[ci]
	i, ok := slices.BinarySearchFunc(c, key, func(kv KV, k string) int { return strings.Compare(kv.Key, k) })
	if !ok {
		return KV{}, false
	}
	return c[i], true
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

// Recovery says what OpenLocal found in the log, for the caller to log.
type Recovery struct {
	// Replayed is how many log records were applied over the state file.
	Replayed int
	// TornBytes is the size of an unfinished record at the end of the log
	// (a commit whose write a crash interrupted, never acknowledged) that
	// OpenLocal cut off; 0 when the log ended cleanly.
	TornBytes int64
}

// OpenLocal opens the store in dir, creating dir (0700) if needed. The
// outcomes:
//
//   - another process has the store open: an error, nothing touched.
//   - no state file and no log: an empty store at revision 0; nothing is
//     written until the first Commit.
//   - a state file that keys opens, and the log: the state file's state
//     with every log record above its revision applied in order (records
//     at or below it were compacted into it already).
//   - the log ends with an unfinished record (cut short, or damaged with no
//     intact record anywhere after it, as a crash during an append leaves
//     it): that record was never acknowledged; it is cut off the log and
//     reported in Recovery (Recovery.TornBytes), and the store opens.
//   - a state file that is not one, is of another format version, does not
//     decrypt with keys or does not decode: an error; the file is left
//     exactly as it is.
//   - a damaged log record (a frame that fails its checksum, a body that
//     fails authentication) with an intact record after it; a record that
//     authenticates but does not decode; records whose revisions do not
//     follow the state file's one by one; a log that is not one: an error
//     that errors.Is ErrStoreCorrupt, and every file is left exactly as it
//     is: acknowledged commits may follow the damage, and the store never
//     drops them silently. A record sealed with a key that keys lacks, the
//     last one too: the same, with ErrUnknownKey.
//
// Temp files that a crash left behind are removed in every case: a write is
// acknowledged only after its rename or its append, so they never hold one.
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
		if strings.HasPrefix(e.Name(), stateTempPfx) || strings.HasPrefix(e.Name(), logTempPfx) {
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
	l := &Local{
		dir:        dir,
		keys:       keys,
		dirf:       dirf,
		sem:        make(chan struct{}, 1),
		stateSize:  int64(len(data)),
		compactMin: compactMinBytes,
		ringMax:    ringSize,
		watchers:   map[*watcher]struct{}{},
		done:       make(chan struct{}),
	}
	if st, err = l.openLog(st); err != nil {
		dirf.Close()
		return nil, fmt.Errorf("open local store: %w", err)
	}
	l.st = st
	return l, nil
}

// Recovery says what the open found in the log: how many records it
// replayed, and the unfinished record it cut off, if any.
func (l *Local) Recovery() Recovery { return l.recovery }

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
	return Snapshot{Rev: st.rev, KVs: st.all()}, nil
}

// Commit applies txn. The outcomes:
//
//   - an invalid txn (an empty key, a key over MaxKeyLen bytes, a key put
//     or deleted twice): an error, nothing written.
//   - a Cond does not hold: an error that errors.Is ErrConflict, nothing
//     written.
//   - no Op changes anything (no ops, or only deletes of absent keys): the
//     current revision, nothing written.
//   - otherwise the new revision, one above the last, once the batch is on
//     disk: one record appended to the log and fdatasynced (the first
//     commit into a store without a log creates it, by temp file, fsync,
//     rename and fsync of the directory); every put key gets that ModRev,
//     and watchers get the batch. When the log then holds more than
//     max(1 MiB, the state file's size), the whole state is written to a
//     new state file and the log started afresh (see Compact) before
//     Commit returns; a failure of that is not the commit's (it is
//     durable in the log) and is tried again later.
//   - the write fails: an error; the store's state in memory is unchanged.
//     The log is cut back to where it was; the record may or may not
//     survive a crash, like any write that was not acknowledged. The next
//     Commit writes the whole state to a new state file and starts a new
//     log, rather than append to a file that failed.
//   - ctx ends while waiting for another Commit, or before the write: its
//     error, nothing written.
//   - the store is closed: an error that errors.Is ErrUnavailable.
//
// Group commit: Commits that arrive while a write is on its way to disk
// wait together, and the next of them to run writes them all, in the order
// they arrived, each as its own record with its own revision (applied and
// checked as if one after the other), with one write and one fdatasync for
// the group. Each is acknowledged only once that fdatasync returns; if the
// write fails, every Commit of the group fails.
//
// Commit copies the values; the caller may reuse txn afterwards.
func (l *Local) Commit(ctx context.Context, txn Txn) (Revision, error) {
	if err := validateOps(txn.Ops); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	req := &pendingCommit{ctx: ctx, txn: txn, done: make(chan commitResult, 1)}
	l.qmu.Lock()
	l.queue = append(l.queue, req)
	l.qmu.Unlock()
	select {
	case l.sem <- struct{}{}:
	case r := <-req.done:
		return r.rev, r.err
	case <-ctx.Done():
		if l.unqueue(req) {
			return 0, fmt.Errorf("commit: %w", ctx.Err())
		}
		r := <-req.done // a group took it: it is being written
		return r.rev, r.err
	}
	// This Commit writes the group waiting now, its own among them unless
	// an earlier group took it.
	l.qmu.Lock()
	group := l.queue
	l.queue = nil
	l.qmu.Unlock()
	if len(group) > 0 {
		l.commitGroup(group)
	}
	<-l.sem
	r := <-req.done
	return r.rev, r.err
}

// pendingCommit is a Commit waiting for its group to be written.
type pendingCommit struct {
	ctx  context.Context
	txn  Txn
	done chan commitResult // buffered: the writer never waits for the Commit
}

type commitResult struct {
	rev Revision
	err error
}

// unqueue removes req from the queue if no group has taken it yet.
func (l *Local) unqueue(req *pendingCommit) bool {
	l.qmu.Lock()
	defer l.qmu.Unlock()
	for i, q := range l.queue {
		if q == req {
			l.queue = append(l.queue[:i], l.queue[i+1:]...)
			return true
		}
	}
	return false
}

// commitGroup writes group (in order) as one append and one fdatasync, and
// answers each Commit in it. The caller holds sem.
func (l *Local) commitGroup(group []*pendingCommit) {
	l.mu.Lock()
	cur, closed := l.st, l.closed
	l.mu.Unlock()
	if closed {
		for _, req := range group {
			req.done <- commitResult{err: fmt.Errorf("commit: %w", errClosed)}
		}
		return
	}
	next := cur
	var recs []byte
	var batches []Batch
	var written []*pendingCommit // answered once the group is durable
	var revs []Revision
	for _, req := range group {
		rev, events, err := next.check(req.ctx, req.txn)
		if err != nil {
			req.done <- commitResult{err: fmt.Errorf("commit: %w", err)}
			continue
		}
		if len(events) > 0 {
			rec, err := frameRecord(l.keys, encodeLogBody(nil, rev, events))
			if err != nil {
				req.done <- commitResult{err: fmt.Errorf("commit: %w", err)}
				continue
			}
			recs = append(recs, rec...)
			next = next.with(rev, events)
			batches = append(batches, Batch{Rev: rev, Events: events})
		}
		// A Commit that changes nothing still waits for the group: the
		// revision it saw must be durable before it is reported.
		written = append(written, req)
		revs = append(revs, rev)
	}
	l.groupLen = len(batches)
	if len(batches) > 0 {
		if err := l.persist(next, recs); err != nil {
			for _, req := range written {
				req.done <- commitResult{err: fmt.Errorf("commit: %w", err)}
			}
			return
		}
		l.mu.Lock()
		l.st = next
		for _, b := range batches {
			l.ring = append(l.ring, b)
			if len(l.ring) > l.ringMax {
				l.ring[0] = Batch{}
				l.ring = l.ring[1:]
			}
			for w := range l.watchers {
				w.push(b)
			}
		}
		l.mu.Unlock()
	}
	for i, req := range written {
		req.done <- commitResult{rev: revs[i]}
	}
	if len(batches) > 0 {
		l.maybeCompact(next)
	}
}

// check evaluates txn against s: the revision it commits at (s.rev if it
// changes nothing) and its events, or the error that refuses it (a Cond
// that does not hold, ctx ended).
func (s *state) check(ctx context.Context, txn Txn) (Revision, []Event, error) {
	for _, c := range txn.Conds {
		kv, ok := s.get(c.Key)
		if c.ModRev == 0 && ok {
			return 0, nil, fmt.Errorf("%s exists: %w", c.Key, ErrConflict)
		}
		if c.ModRev != 0 && (!ok || kv.ModRev != c.ModRev) {
			return 0, nil, fmt.Errorf("%s is not at revision %d: %w", c.Key, c.ModRev, ErrConflict)
		}
	}
	events := s.changes(txn.Ops, s.rev+1)
	if len(events) == 0 {
		return s.rev, nil, nil
	}
	if err := ctx.Err(); err != nil {
		return 0, nil, err
	}
	return s.rev + 1, events, nil
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

// changes returns the events of ops at revision rev, in the order of ops:
// every put, and every delete of a key that exists. Values are copied into
// one new buffer. ops hold unique keys.
func (s *state) changes(ops []Op, rev Revision) []Event {
	size := 0
	for _, op := range ops {
		if !op.Delete {
			size += len(op.Value)
		}
	}
	buf := make([]byte, 0, size)
	events := make([]Event, 0, len(ops))
	for _, op := range ops {
		if op.Delete {
			if _, ok := s.get(op.Key); ok {
				events = append(events, Event{Key: op.Key, ModRev: rev, Deleted: true})
			}
			continue
		}
		start := len(buf)
		buf = append(buf, op.Value...)
		events = append(events, Event{Key: op.Key, Value: buf[start:len(buf):len(buf)], ModRev: rev})
	}
	return events
}

// with returns the state at rev after events (unique keys; a delete of an
// absent key changes nothing; values and ModRevs are taken as they are).
// Only the runs that an event falls in are rebuilt; the others are shared
// with s.
func (s *state) with(rev Revision, events []Event) *state {
	order := make([]int, len(events))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(events[a].Key, events[b].Key) })
	next := &state{rev: rev, n: s.n, chunks: make([][]KV, 0, len(s.chunks)+1)}
	copied := 0 // runs of s before this are in next
	for k := 0; k < len(order); {
		ci := s.chunkOf(events[order[k]].Key)
		if ci == len(s.chunks) && ci > 0 {
			ci-- // above every key: the last run takes it
		}
		next.chunks = append(next.chunks, s.chunks[copied:min(ci, len(s.chunks))]...)
		var old []KV
		if ci < len(s.chunks) {
			old = s.chunks[ci]
		}
		// The events of this run: up to its last key, or all that are
		// left for the last run.
		j := k
		for j < len(order) && (ci >= len(s.chunks)-1 || events[order[j]].Key <= old[len(old)-1].Key) {
			j++
		}
		merged := make([]KV, 0, len(old)+j-k)
		i := 0
		for _, oi := range order[k:j] {
			e := events[oi]
			for i < len(old) && old[i].Key < e.Key {
				merged = append(merged, old[i])
				i++
			}
			if i < len(old) && old[i].Key == e.Key {
				i++ // replaced or deleted
				next.n--
			}
			if !e.Deleted {
				merged = append(merged, KV{Key: e.Key, Value: e.Value, ModRev: e.ModRev})
				next.n++
			}
		}
		merged = append(merged, old[i:]...)
		for len(merged) > chunkMax {
			next.chunks = append(next.chunks, merged[:chunkFill:chunkFill])
			merged = merged[chunkFill:]
		}
		if len(merged) > 0 {
			next.chunks = append(next.chunks, merged)
		}
		copied = ci + 1
		k = j
	}
	if copied < len(s.chunks) {
		next.chunks = append(next.chunks, s.chunks[copied:]...)
	}
	return next
}

// writeState puts st on disk as the state file, atomically and durably.
func (l *Local) writeState(st *state) error {
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
	l.at("compact-state-written")
	if err := os.Rename(tmp, filepath.Join(l.dir, stateFileName)); err != nil {
		return err
	}
	renamed = true
	l.at("compact-state-renamed")
	if err := l.dirf.Sync(); err != nil {
		return err
	}
	l.stateSize = int64(len(file))
	return nil
}

// at calls the test hook, if any, at a named step of a write.
func (l *Local) at(point string) {
	if l.hook != nil {
		l.hook(point)
	}
}

// encodePayload encodes st: u64 revision, u32 count, then per record (sorted
// by key) str16 key, u64 modrev, bytes32 value; integers big endian.
func encodePayload(st *state) []byte {
	size := 8 + 4
	for _, c := range st.chunks {
		for _, kv := range c {
			size += minRecord + len(kv.Key) + len(kv.Value)
		}
	}
	b := make([]byte, 0, size)
	b = binary.BigEndian.AppendUint64(b, uint64(st.rev))
	b = binary.BigEndian.AppendUint32(b, uint32(st.n))
	for _, c := range st.chunks {
		for _, kv := range c {
			b = binary.BigEndian.AppendUint16(b, uint16(len(kv.Key)))
			b = append(b, kv.Key...)
			b = binary.BigEndian.AppendUint64(b, uint64(kv.ModRev))
			b = binary.BigEndian.AppendUint32(b, uint32(len(kv.Value)))
			b = append(b, kv.Value...)
		}
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
	kvs := make([]KV, 0, min(int(count), len(b)/minRecord))
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
		case len(kvs) > 0 && cmp.Compare(kvs[len(kvs)-1].Key, key) >= 0:
			return nil, fmt.Errorf("decode state: record %d out of order", n)
		case modRev == 0 || modRev > rev:
			return nil, fmt.Errorf("decode state: record %d has revision %d outside 1..%d", n, modRev, rev)
		}
		kvs = append(kvs, KV{Key: key, Value: val, ModRev: Revision(modRev)})
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("decode state: %d trailing bytes", len(b))
	}
	return newState(Revision(rev), kvs), nil
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
	if l.log != nil {
		if cerr := l.log.Close(); err == nil {
			err = cerr
		}
	}
	if cerr := l.lock.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("close local store: %w", err)
	}
	return nil
}
