package selfrun

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
)

// DefaultMaxPerUser is how many runs a user may hold at once unless the
// config says otherwise (max_runs_per_user).
const DefaultMaxPerUser = 4

// Books counts the runs each user holds. The zero value is not usable;
// New makes one.
type Books struct {
	max int

	mu     sync.Mutex
	held   map[string]int
	ends   map[string]chan struct{} // by run id: closed to end that run
	stop   chan struct{}
	closed bool
}

// New returns books that let a user hold at most max runs at once.
func New(max int) *Books {
	if max < 1 {
		max = DefaultMaxPerUser
	}
	return &Books{max: max, held: map[string]int{}, ends: map[string]chan struct{}{}, stop: make(chan struct{})}
}

// Max is how many runs a user may hold at once.
func (b *Books) Max() int { return b.max }

// Acquire takes one of user's runs. It returns a release func to call
// exactly once when the run ends, or ok false when user holds max runs
// already or the agent is stopping.
func (b *Books) Acquire(user string) (release func(), ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.held[user] >= b.max {
		return nil, false
	}
	b.held[user]++
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			if b.held[user]--; b.held[user] <= 0 {
				delete(b.held, user)
			}
		})
	}, true
}

// Track notes run id and returns the channel End closes, and a func to
// forget it once the run is over.
func (b *Books) Track(id string) (ended <-chan struct{}, forget func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch := make(chan struct{})
	b.ends[id] = ch
	return ch, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.ends[id] == ch {
			delete(b.ends, id)
		}
	}
}

// End asks run id to end (an admin's DELETE /v1/workloads/{id}); false
// when there is no such run.
func (b *Books) End(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch, ok := b.ends[id]
	if ok {
		close(ch)
		delete(b.ends, id)
	}
	return ok
}

// Held is how many runs user holds.
func (b *Books) Held(user string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.held[user]
}

// Stopping is closed when the agent stops: every run ends then.
func (b *Books) Stopping() <-chan struct{} { return b.stop }

// Run waits for ctx to end, then ends every run (closes Stopping) and
// refuses new ones. It always returns nil: it is a part of the agent's
// runAll that must not stop the others.
func (b *Books) Run(ctx context.Context) error {
	<-ctx.Done()
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.stop)
	}
	b.mu.Unlock()
	return nil
}

// maxID is the longest registration id (the agent's identifiers are 1 to
// 128 characters).
const maxID = 128

// NewID names a run of user: "run-USER-" and 12 random hex digits, the
// user cut short to fit. The user is a valid identifier already, so the
// id is one too.
func NewID(user string) string {
	var r [6]byte
	rand.Read(r[:])
	suffix := "-" + hex.EncodeToString(r[:])
	if room := maxID - len("run-") - len(suffix); len(user) > room {
		user = user[:room]
	}
	return "run-" + user + suffix
}
