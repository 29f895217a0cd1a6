package agent

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/envlet/envlet/agent/wire"
)

// Rotation to running programs (docs/design.md §7). A launcher started with --watch
// sends Watch; the agent answers with the Env frame, then one Changed frame
// each time the workload's environment changes, until either side closes.
// The launcher then asks GetEnv again, which also clears `stale` in
// `workload list`.

// maxWatchers bounds the Watch connections of one workload.
const maxWatchers = 64

// watcher is one Watch connection. Notifying it never blocks: the latest
// revision is stored and a wake-up is left in a one-slot channel, so a slow
// watcher sees one Changed for several changes, with the newest revision.
type watcher struct {
	rev  atomic.Uint64
	wake chan struct{}
	gone chan struct{} // closed when the workload is deregistered or the agent stops
}

// watchSet holds the watchers of every workload, by workload id (a
// re-registration under the same id keeps them).
type watchSet struct {
	mu     sync.Mutex
	byID   map[string]map[*watcher]bool
	closed bool
}

// add registers w for id; false when id has maxWatchers already or the
// agent is stopping.
func (s *watchSet) add(id string, w *watcher) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.byID[id]) >= maxWatchers {
		return false
	}
	if s.byID == nil {
		s.byID = map[string]map[*watcher]bool{}
	}
	if s.byID[id] == nil {
		s.byID[id] = map[*watcher]bool{}
	}
	s.byID[id][w] = true
	return true
}

func (s *watchSet) remove(id string, w *watcher) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if set := s.byID[id]; set[w] {
		delete(set, w)
		if len(set) == 0 {
			delete(s.byID, id)
		}
	}
}

// notify tells every watcher of id about rev, without blocking.
func (s *watchSet) notify(id string, rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for w := range s.byID[id] {
		w.rev.Store(rev)
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// drop ends the watches of id: the workload is gone. A launcher that
// watches again is refused with WORKLOAD_UNKNOWN.
func (s *watchSet) drop(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for w := range s.byID[id] {
		close(w.gone)
	}
	delete(s.byID, id)
}

// ids returns the workload ids that have watchers.
func (s *watchSet) ids() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.byID))
	for id := range s.byID {
		out = append(out, id)
	}
	return out
}

// requestTimeout bounds one exchange on a socket (request_timeout).
func (a *Agent) requestTimeout() time.Duration {
	if a.cfg.RequestTimeout > 0 {
		return a.cfg.RequestTimeout
	}
	return requestTimeout
}

// count returns how many watchers id has.
func (s *watchSet) count(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byID[id])
}

// closeAll ends every watch and refuses new ones: the agent is stopping.
func (s *watchSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for id, set := range s.byID {
		for w := range set {
			close(w.gone)
		}
		delete(s.byID, id)
	}
}

// serveWatch answers Watch: the env now, then Changed on every change of
// the workload's environment, until either side closes. The connection is
// not bound by the request deadline (each write is), and once set up it
// gives back its slot of max_conns_per_uid through freeSlot: watches are
// bounded per workload instead (maxWatchers), and the GetEnv every watching
// launcher sends after a Changed must not be refused because its uid's
// watches hold the slots.
func (a *Agent) serveWatch(c *net.UnixConn, p peer, req wire.Request, freeSlot func()) {
	a.awaitEngine(p)
	a.mu.RLock()
	w, e := a.match(p)
	if e != nil {
		a.mu.RUnlock()
		a.refuse(c, p, e.Code, e.Message)
		return
	}
	id := w.reg.ID
	wt := &watcher{wake: make(chan struct{}, 1), gone: make(chan struct{})}
	// Registered while the read lock holds off re-resolution, so no change
	// can fall between the Env frame and the first Changed.
	if !a.watchers.add(id, wt) {
		a.mu.RUnlock()
		a.refuse(c, p, CodeWatchLimit, "workload "+id+" has too many watching launchers (at most 64), or the agent is stopping")
		return
	}
	defer a.watchers.remove(id, wt)
	frame := a.envFrame(w)
	rev := a.model.rev
	envRev := int64(w.envRev)
	w.noteServed(rev)
	to := a.servedTo(w)
	a.mu.RUnlock()
	// Before the Env frame, so a launcher that has it can count on the slot
	// being free.
	freeSlot()
	_, err := c.Write(frame.Bytes())
	hmacs := a.audit.servedJSON(id, envRev, frame.Bytes())
	frame.Free()
	if err != nil {
		a.log.Debug("write env", "workload", id, "error", err)
		return
	}
	a.audit.write(to.record(auditRecord{Action: "serve", Scope: "workload:" + id, Workload: id, Revision: int64(rev), hmacsJSON: hmacs, Socket: "workload"}), &p, a.recordName(p.uid))
	a.log.Debug("watching", "workload", id, "revision", rev, "pid", p.pid)

	c.SetDeadline(time.Time{})
	why := a.followWatch(c, p, id, wt)
	// Gone from the set before the log line, so whoever reads the line can
	// count on the slot among the workload's watches being free.
	a.watchers.remove(id, wt)
	a.log.Debug(why, "workload", id, "pid", p.pid)
}

// followWatch writes a Changed frame for each wake-up of wt until the
// launcher closes, the watch is ended, or a write fails, and says which.
func (a *Agent) followWatch(c *net.UnixConn, p peer, id string, wt *watcher) string {
	// A launcher sends nothing after Watch; a read that returns means it
	// closed (or broke the protocol, which ends the watch all the same).
	closed := make(chan struct{})
	go func() {
		var b [1]byte
		c.Read(b[:])
		close(closed)
	}()
	defer func() { c.Close(); <-closed }()
	for {
		select {
		case <-closed:
			return "watch closed by the launcher"
		case <-wt.gone:
			return "watch ended by the agent"
		case <-wt.wake:
			rev := wt.rev.Load()
			c.SetWriteDeadline(time.Now().Add(a.requestTimeout()))
			if _, err := c.Write(wire.AppendChanged(nil, rev)); err != nil {
				a.log.Debug("write changed", "workload", id, "error", err)
				return "watch dropped: the launcher does not read"
			}
			a.log.Debug("notified", "workload", id, "revision", rev, "pid", p.pid)
		}
	}
}
