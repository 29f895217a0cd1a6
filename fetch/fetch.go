package fetch

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Revision numbers the states of a backend. Every committed transaction that
// changes something makes a new revision, higher than all before it.
type Revision int64

// KV is one record: an opaque (already sealed) value under a key, and the
// revision that last wrote it.
type KV struct {
	Key    string
	Value  []byte
	ModRev Revision
}

// Snapshot is a backend's whole state at one revision. KVs are sorted by key.
// Values may be shared with the backend and other snapshots: treat them as
// read-only.
type Snapshot struct {
	Rev Revision
	KVs []KV
}

// Event is one change of a committed transaction.
type Event struct {
	Key     string
	Value   []byte // nil when Deleted
	ModRev  Revision
	Deleted bool
}

// Batch is one committed transaction, as Watch delivers it.
//
// A Batch with Reset set carries no events: the backend could not replay
// the changes since the watcher's revision (they are older than what it
// keeps), so the watcher must read a new Snapshot, whose revision is at
// least Rev, and go on from the batches after it on the same channel.
type Batch struct {
	Rev    Revision
	Events []Event
	Reset  bool
}

// Cond is a precondition of a transaction: the key's ModRev must equal
// ModRev, where ModRev 0 means the key must be absent.
type Cond struct {
	Key    string
	ModRev Revision
}

// Op is one write of a transaction: a put of Value under Key, or a delete.
type Op struct {
	Key    string
	Value  []byte
	Delete bool
}

// Txn is applied atomically: if every Cond holds, every Op is applied at one
// new revision; otherwise nothing is written.
type Txn struct {
	Conds []Cond
	Ops   []Op
}

// ErrConflict reports that a Cond did not hold; nothing was written. Test
// with errors.Is: backends wrap it with the key that failed.
var ErrConflict = errors.New("conflict")

// ErrUnavailable reports that the backend cannot be reached or is closed.
// Test with errors.Is.
var ErrUnavailable = errors.New("backend unavailable")

// ErrUncertain reports a Commit that the backend received but did not
// confirm in time: it may still be applied when the backend recovers. It
// wraps ErrUnavailable, so errors.Is(err, ErrUnavailable) holds for it too.
var ErrUncertain = fmt.Errorf("the change was sent but not confirmed; it may still be applied: %w", ErrUnavailable)

// Backend is a source of records. Implementations are safe for concurrent
// use.
type Backend interface {
	// Snapshot returns the state at the latest revision.
	Snapshot(ctx context.Context) (Snapshot, error)
	// Commit applies txn and returns the revision it made; the write is
	// durable when Commit returns without error.
	Commit(ctx context.Context, txn Txn) (Revision, error)
	// Watch delivers every batch with Rev > after, in order, or a Reset
	// batch when it cannot. The channel is closed when ctx ends or the
	// backend is closed.
	Watch(ctx context.Context, after Revision) <-chan Batch
	// Close releases the backend and closes every Watch channel.
	Close() error
}

// stopWith returns a context that ends with ctx or when done is closed
// (a backend's Close), so a watch goroutine stops on either.
func stopWith(ctx context.Context, done <-chan struct{}) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// sender returns a send on out that gives up when ctx ends.
func sender(ctx context.Context, out chan<- Batch) func(Batch) bool {
	return func(b Batch) bool {
		select {
		case out <- b:
			return true
		case <-ctx.Done():
			return false
		}
	}
}

// runWatch is a backend's Watch: it runs loop in a goroutine that wg
// counts, and closes out when loop returns. loop's ctx ends with ctx or
// when done is closed (the backend's Close); its send gives up then.
func runWatch(ctx context.Context, wg *sync.WaitGroup, done <-chan struct{}, out chan Batch,
	loop func(ctx context.Context, send func(Batch) bool)) <-chan Batch {
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(out)
		ctx, cancel := stopWith(ctx, done)
		defer cancel()
		loop(ctx, sender(ctx, out))
	}()
	return out
}
