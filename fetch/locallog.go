package fetch

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// The local store's commit log (format in doc.go): DIR/state.log holds,
// after a header, one sealed record per committed batch since the state
// file was last written.

const (
	logFileName  = "state.log"
	logTempPfx   = "state.log.tmp-"
	logMagic     = "ENVLETLG"
	logVersion   = 1
	logAAD       = "envlet-log v1"
	logHeaderLen = len(logMagic) + 1
	// recHeaderLen is a record's frame: u32 length of the sealed body and
	// u32 CRC-32C of those four bytes.
	recHeaderLen = 8
	// compactMinBytes is the least log (records, not header) that is
	// compacted into the state file; above it, the log is compacted once
	// it outgrows the state file.
	compactMinBytes = 1 << 20
	// minEvent is the smallest encoded event: u8 kind, str16 key.
	minEvent = 1 + 2
	opPut    = 1
	opDelete = 2
)

var logHeader = logMagic + string(rune(logVersion))

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrStoreCorrupt reports a local store whose log is damaged where a crash
// cannot have damaged it (before its last record), or does not belong with
// its state file. OpenLocal refuses such a store and changes nothing: the
// damage may hide acknowledged commits. Test with errors.Is; its text,
// STORE_CORRUPT, is the stable code operators see.
var ErrStoreCorrupt = errors.New("STORE_CORRUPT")

// logRecord is one decoded log record: a committed batch.
type logRecord struct {
	rev    Revision
	events []Event
}

// encodeLogBody appends the body of a log record to dst: u64 revision, u32
// count, then per event u8 kind (1 put, 2 delete), str16 key, and for a put
// bytes32 value; integers big endian.
func encodeLogBody(dst []byte, rev Revision, events []Event) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(rev))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(events)))
	for _, e := range events {
		kind := byte(opPut)
		if e.Deleted {
			kind = opDelete
		}
		dst = append(dst, kind)
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(e.Key)))
		dst = append(dst, e.Key...)
		if !e.Deleted {
			dst = binary.BigEndian.AppendUint32(dst, uint32(len(e.Value)))
			dst = append(dst, e.Value...)
		}
	}
	return dst
}

var errLogTruncated = errors.New("decode log record: truncated")

// decodeLogBody decodes what encodeLogBody made, strictly: a revision of 1
// or more, at least one event, kinds 1 or 2, keys non-empty and unique, no
// trailing bytes. Values alias b.
func decodeLogBody(b []byte) (logRecord, error) {
	if len(b) < 12 {
		return logRecord{}, errLogTruncated
	}
	rev := binary.BigEndian.Uint64(b)
	count := binary.BigEndian.Uint32(b[8:])
	b = b[12:]
	switch {
	case rev == 0 || rev > math.MaxInt64:
		return logRecord{}, errors.New("decode log record: revision out of range")
	case count == 0:
		return logRecord{}, errors.New("decode log record: no events")
	}
	r := logRecord{rev: Revision(rev), events: make([]Event, 0, min(int(count), len(b)/minEvent))}
	seen := make(map[string]struct{}, cap(r.events))
	for n := uint32(0); n < count; n++ {
		if len(b) < minEvent {
			return logRecord{}, errLogTruncated
		}
		kind := b[0]
		kl := int(binary.BigEndian.Uint16(b[1:]))
		b = b[minEvent:]
		if len(b) < kl {
			return logRecord{}, errLogTruncated
		}
		key := string(b[:kl])
		b = b[kl:]
		if kl == 0 {
			return logRecord{}, fmt.Errorf("decode log record: event %d has an empty key", n)
		}
		if _, dup := seen[key]; dup {
			return logRecord{}, fmt.Errorf("decode log record: event %d repeats a key", n)
		}
		seen[key] = struct{}{}
		switch kind {
		case opDelete:
			r.events = append(r.events, Event{Key: key, ModRev: Revision(rev), Deleted: true})
		case opPut:
			if len(b) < 4 {
				return logRecord{}, errLogTruncated
			}
			vl := uint64(binary.BigEndian.Uint32(b))
			b = b[4:]
			if uint64(len(b)) < vl {
				return logRecord{}, errLogTruncated
			}
			r.events = append(r.events, Event{Key: key, Value: b[:vl:vl], ModRev: Revision(rev)})
			b = b[vl:]
		default:
			return logRecord{}, fmt.Errorf("decode log record: event %d of unknown kind %d", n, kind)
		}
	}
	if len(b) != 0 {
		return logRecord{}, fmt.Errorf("decode log record: %d trailing bytes", len(b))
	}
	return r, nil
}

// frameRecord seals body and frames it as a log record.
func frameRecord(keys *Keyring, body []byte) ([]byte, error) {
	id := keys.PrimaryID()
	sealedLen := 1 + len(id) + nonceSize + len(body) + tagSize
	if uint64(sealedLen) > math.MaxUint32 {
		return nil, errors.New("batch larger than 4 GiB")
	}
	rec := make([]byte, recHeaderLen, recHeaderLen+sealedLen)
	rec = keys.Seal(rec, body, logAAD)
	binary.BigEndian.PutUint32(rec, uint32(len(rec)-recHeaderLen))
	binary.BigEndian.PutUint32(rec[4:], crc32.Checksum(rec[:4], castagnoli))
	return rec, nil
}

// scanLog reads a whole log file. It returns its records in order, and the
// length of its good part: the header and every whole, authentic record up
// to the first that is not. A good part shorter than data is a torn tail:
// a record that a crash cut short (too short for its frame or for the
// length in it), or that is damaged (a frame that fails its checksum, a
// body that fails authentication), with no intact record anywhere after
// it: only the last append can be unfinished, and it was never
// acknowledged. Damage with an intact record after it is an error
// (ErrStoreCorrupt): the records after the damage were acknowledged. So
// are a record that authenticates but does not decode and revisions that
// do not follow one by one; a record sealed with a key the ring lacks is
// an error that errors.Is ErrUnknownKey, wherever it is. A file shorter
// than the header that is a prefix of it is a log whose creation was cut
// short: empty, good 0. No error quotes the data.
func scanLog(keys *Keyring, data []byte) (recs []logRecord, good int, err error) {
	if len(data) < logHeaderLen {
		if string(data) == logHeader[:len(data)] {
			return nil, 0, nil
		}
		return nil, 0, fmt.Errorf("%w: not an envlet log file", ErrStoreCorrupt)
	}
	if string(data[:len(logMagic)]) != logMagic {
		return nil, 0, fmt.Errorf("%w: not an envlet log file", ErrStoreCorrupt)
	}
	if v := data[len(logMagic)]; v != logVersion {
		return nil, 0, fmt.Errorf("%w: unsupported log format version %d", ErrStoreCorrupt, v)
	}
	off := logHeaderLen
	for off < len(data) {
		body, end, err := readRecord(keys, data[off:])
		if err != nil {
			return nil, 0, fmt.Errorf("record %d at byte %d: %w", len(recs)+1, off, err)
		}
		if body == nil {
			for at := off + 1; at < len(data); at++ {
				if intactAt(keys, data[at:]) {
					return nil, 0, fmt.Errorf("%w: record %d at byte %d is damaged, and an intact record follows at byte %d", ErrStoreCorrupt, len(recs)+1, off, at)
				}
			}
			return recs, off, nil
		}
		r, err := decodeLogBody(body)
		if err != nil {
			return nil, 0, fmt.Errorf("%w: record %d at byte %d: %w", ErrStoreCorrupt, len(recs)+1, off, err)
		}
		if len(recs) > 0 && r.rev != recs[len(recs)-1].rev+1 {
			return nil, 0, fmt.Errorf("%w: record %d at byte %d has revision %d after %d", ErrStoreCorrupt, len(recs)+1, off, r.rev, recs[len(recs)-1].rev)
		}
		recs = append(recs, r)
		off += end
	}
	return recs, off, nil
}

// readRecord reads the record at the start of b: its opened body and its
// length with the frame; a nil body if there is no whole, authentic record
// there; an error (ErrUnknownKey) if the record is sealed with a key that
// keys lacks.
func readRecord(keys *Keyring, b []byte) (body []byte, end int, err error) {
	if len(b) < recHeaderLen || crc32.Checksum(b[:4], castagnoli) != binary.BigEndian.Uint32(b[4:]) {
		return nil, 0, nil
	}
	n := uint64(binary.BigEndian.Uint32(b))
	if n > uint64(len(b)-recHeaderLen) {
		return nil, 0, nil
	}
	sealed := b[recHeaderLen : recHeaderLen+int(n)]
	body, err = keys.Open(nil, sealed, logAAD)
	if err != nil {
		if id, ok := SealedKeyID(sealed); ok && validKeyID(id) && !keys.Has(id) {
			return nil, 0, fmt.Errorf("%w: %q", ErrUnknownKey, id)
		}
		return nil, 0, nil
	}
	if body == nil {
		body = []byte{} // authentic, if empty (decodeLogBody refuses it)
	}
	return body, recHeaderLen + int(n), nil
}

// intactAt reports whether a whole record starts at b: authentic, or
// sealed with a key the ring lacks (which may well be one).
func intactAt(keys *Keyring, b []byte) bool {
	body, _, err := readRecord(keys, b)
	return body != nil || err != nil
}

// replay applies to st the records above its revision. Those at or below
// it were compacted into the state file already (a crash between writing
// the state file and starting a new log leaves them); the first above must
// follow it, and each must apply cleanly (a delete of a key that exists).
// The records are folded into the last change of each key, then applied
// to st at once: replaying a long log costs one pass over the state, not
// one per record.
func replay(st *state, recs []logRecord) (*state, int, error) {
	last := map[string]Event{} // key -> its last change in the log
	rev := st.rev
	applied := 0
	for _, r := range recs {
		if r.rev <= st.rev {
			continue
		}
		if r.rev != rev+1 {
			return nil, 0, fmt.Errorf("%w: the log goes on at revision %d but the state file is at revision %d: the state file is older than the log (restored or replaced?)", ErrStoreCorrupt, r.rev, st.rev)
		}
		for _, e := range r.events {
			if e.Deleted {
				exists := false
				if prev, ok := last[e.Key]; ok {
					exists = !prev.Deleted
				} else {
					_, exists = st.get(e.Key)
				}
				if !exists {
					return nil, 0, fmt.Errorf("%w: the record of revision %d deletes %s, which the state does not hold", ErrStoreCorrupt, r.rev, e.Key)
				}
			}
			last[e.Key] = e
		}
		rev = r.rev
		applied++
	}
	if applied == 0 {
		return st, 0, nil
	}
	events := make([]Event, 0, len(last))
	for _, e := range last {
		events = append(events, e)
	}
	return st.with(rev, events), applied, nil
}

// openLog reads the log, if there is one, applies it over st and makes it
// the log that commits append to. A torn tail is cut off.
func (l *Local) openLog(st *state) (*state, error) {
	path := filepath.Join(l.dir, logFileName)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("read log %s: %w", path, err)
	}
	recs, good, err := scanLog(l.keys, data)
	if err == nil {
		var n int
		st, n, err = replay(st, recs)
		l.recovery.Replayed = n
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("log %s: %w", path, err)
	}
	l.recovery.TornBytes = int64(len(data) - good)
	if good < logHeaderLen {
		// No header: the first commit makes a new log.
		f.Close()
		return st, nil
	}
	if good < len(data) {
		// Cut the torn record off, so appends follow the good ones. If
		// that fails, the next commit starts a new log instead.
		if f.Truncate(int64(good)) != nil || f.Sync() != nil {
			l.logBroken = true
		}
	}
	l.log, l.logSize = f, int64(good)
	return st, nil
}

// persist makes the batches that turn the current state into next durable:
// their records (recs, framed) appended to the log with one fdatasync; or,
// when the log failed before, the whole state written to a new state file
// and a new log started.
func (l *Local) persist(next *state, recs []byte) error {
	if l.logBroken {
		if err := l.writeState(next); err != nil {
			return fmt.Errorf("write state: %w", err)
		}
		l.resetLog() // if it fails, the next commit writes the state again
		return nil
	}
	if l.log == nil {
		if err := l.resetLog(); err != nil {
			return fmt.Errorf("create log: %w", err)
		}
	}
	off := l.logSize
	_, err := l.log.WriteAt(recs, off)
	if err == nil {
		l.at("append-written")
		if err = unix.Fdatasync(int(l.log.Fd())); err != nil {
			// The file's pages are in doubt after a failed fdatasync:
			// the next commit writes the whole state anew.
			l.logBroken = true
		}
	}
	if err != nil {
		// Cut the record off, so the next append follows the last good one.
		if l.log.Truncate(off) != nil {
			l.logBroken = true
		}
		return fmt.Errorf("append to log: %w", err)
	}
	l.logSize = off + int64(len(recs))
	l.at("append-synced")
	return nil
}

// resetLog starts a new, empty log: a temp file with the header, fsynced,
// renamed over the log and the directory fsynced. Once the rename is done
// the new file is the log even if the directory's fsync fails (the old one
// is gone from the directory); the log is then marked broken, so the next
// commit writes the state file, whose own fsync of the directory makes the
// rename durable.
func (l *Local) resetLog() error {
	f, err := os.CreateTemp(l.dir, logTempPfx+"*") // mode 0600
	if err != nil {
		return err
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if _, err := f.Write([]byte(logHeader)); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	l.at("compact-log-written")
	if err := os.Rename(tmp, filepath.Join(l.dir, logFileName)); err != nil {
		return fail(err)
	}
	if l.log != nil {
		l.log.Close()
	}
	l.log, l.logSize = f, int64(logHeaderLen)
	l.at("compact-log-renamed")
	if err := l.dirf.Sync(); err != nil {
		l.logBroken = true
		return err
	}
	l.logBroken = false
	return nil
}

// maybeCompact compacts the log into the state file once it holds more
// than max(compactMin, the state file's size) bytes of records, so the
// cost of compaction, spread over the commits that grew the log, stays a
// constant per byte committed. A failure leaves the log as it is (every
// commit in it is durable) and is tried again after compactMin more.
func (l *Local) maybeCompact(st *state) {
	if l.log == nil || l.logBroken {
		return
	}
	if l.logSize-int64(logHeaderLen) <= max(l.compactMin, l.stateSize) || l.logSize < l.compactAt {
		return
	}
	if err := l.compact(st); err != nil {
		l.compactAt = l.logSize + l.compactMin
	}
}

// compact writes st (the current state) to a new state file, then starts a
// new log. A crash between the two leaves the old log beside a state file
// that holds all of it: its records are at or below the state file's
// revision, and opening skips them.
func (l *Local) compact(st *state) error {
	l.at("compact-start")
	if err := l.writeState(st); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	l.at("compact-state-durable")
	if err := l.resetLog(); err != nil {
		return fmt.Errorf("start a new log: %w", err)
	}
	l.compactAt = 0
	// Rebuild the runs whole: deletes may have left many small ones.
	l.mu.Lock()
	if l.st == st {
		l.st = newState(st.rev, st.all())
	}
	l.mu.Unlock()
	l.at("compact-done")
	return nil
}

// Compact writes the whole state to a new state file and starts a new,
// empty log, both sealed with the key ring's current primary key: after it
// nothing in the store's directory is sealed with another key (Reseal calls
// it, so a key can go once `envletd key reencrypt` is done). The outcomes:
// nil once both are durable; an error if either write fails (the store
// stays as it was, or holds the new state file beside the old log, which
// opens the same); ErrUnavailable if the store is closed; ctx's error if it
// ends while a Commit is in progress. A store that never wrote anything
// stays without files.
func (l *Local) Compact(ctx context.Context) error {
	select {
	case l.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("compact: %w", ctx.Err())
	}
	defer func() { <-l.sem }()
	l.mu.Lock()
	st, closed := l.st, l.closed
	l.mu.Unlock()
	if closed {
		return fmt.Errorf("compact: %w", errClosed)
	}
	if st.rev == 0 && l.log == nil && l.stateSize == 0 {
		return nil
	}
	if err := l.compact(st); err != nil {
		return fmt.Errorf("compact local store: %w", err)
	}
	return nil
}
