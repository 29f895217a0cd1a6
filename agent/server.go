package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/envlet/envlet/agent/wire"
)

// requestTimeout is the default of request_timeout: it bounds a whole
// exchange on the workload socket, so a peer that connects and sends
// nothing cannot hold a connection.
const requestTimeout = 5 * time.Second

// CodeTooManyConnections: the peer's uid, or everyone together, holds as
// many connections as the agent allows (max_conns_per_uid, max_conns).
const CodeTooManyConnections = wire.CodeTooManyConnections

// serveWorkloads answers the workload protocol (agent/wire): one request per
// connection, the peer identified by the kernel. Until its request is in, a
// connection takes one of its uid's max_conns_per_uid slots (the ones a
// flood of connections that send nothing would hold, each at most
// request_timeout); until it ends, one of the socket's max_conns. A
// connection over either is answered with TOO_MANY_CONNECTIONS at once and
// closed, so a flood from one uid cannot stop others being served. Several
// goroutines accept, so refusing a flood keeps pace with it.
func (a *Agent) serveWorkloads(ctx context.Context, l *net.UnixListener) error {
	go func() { <-ctx.Done(); l.Close() }()
	lim := a.limiter("workload")
	h := &handlers{conns: map[*net.UnixConn]struct{}{}}
	n := max(2, runtime.GOMAXPROCS(0))
	errc := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() { errc <- a.acceptWorkloads(ctx, l, lim, h) }()
	}
	var first error
	for i := 0; i < n; i++ {
		if err := <-errc; err != nil && first == nil {
			first = err
			l.Close() // stop the other acceptors
		}
	}
	h.stop()
	return first
}

// handlers are the workload connections being served. When the agent
// stops, serveWorkloads waits for them, so every reply sent has its audit
// record queued before the audit log is closed; connections still waiting
// for their request (or watching) are cut short rather than waited out.
type handlers struct {
	mu       sync.Mutex
	conns    map[*net.UnixConn]struct{}
	wg       sync.WaitGroup
	stopping atomic.Bool
}

// add counts a connection in; the acceptors call it, and they have all
// returned by the time stop is called.
func (h *handlers) add(c *net.UnixConn) {
	h.wg.Add(1)
	h.mu.Lock()
	h.conns[c] = struct{}{}
	h.mu.Unlock()
}

func (h *handlers) done(c *net.UnixConn) {
	h.mu.Lock()
	delete(h.conns, c)
	h.mu.Unlock()
	h.wg.Done()
}

// stop ends every read a handler waits in and waits for all of them.
func (h *handlers) stop() {
	h.mu.Lock()
	h.stopping.Store(true)
	for c := range h.conns {
		c.SetReadDeadline(time.Now())
	}
	h.mu.Unlock()
	h.wg.Wait()
}

func (a *Agent) acceptWorkloads(ctx context.Context, l *net.UnixListener, lim *connLimiter, h *handlers) error {
	var backoff time.Duration
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil // stopping, or another acceptor failed and closed the listener
			}
			if d, ok := acceptBackoff(err, &backoff); ok {
				lim.noteAcceptError(err)
				time.Sleep(d)
				continue
			}
			return fmt.Errorf("accept on workload socket: %w", err)
		}
		backoff = 0
		accepted := bootTicks()
		// The cheapest checks first: a refusal costs a getsockopt, a
		// write and a close.
		p, err := peerOf(c)
		if err != nil {
			a.log.Warn("workload connection without credentials", "error", err)
			c.Close()
			continue
		}
		s, msg := lim.acquire(p.uid)
		if s == nil {
			lim.refuse(c, wire.AppendError(nil, CodeTooManyConnections, msg))
			continue
		}
		// The pidfd (SO_PEERPIDFD) is taken when /proc is first read
		// (peer.cgroup): most requests never need it.
		p.accepted = accepted
		h.add(c)
		go a.serveWorkload(c, p, s, h)
	}
}

// acceptBackoff says whether an accept error is one to wait out (the
// process or system is out of descriptors or memory, or a connection was
// aborted before accept), and for how long: 5 ms doubling to 1 s.
func acceptBackoff(err error, d *time.Duration) (time.Duration, bool) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return 0, true
	}
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			if *d == 0 {
				*d = 5 * time.Millisecond
			} else if *d *= 2; *d > time.Second {
				*d = time.Second
			}
			return *d, true
		}
	}
	return 0, false
}

func (a *Agent) serveWorkload(c *net.UnixConn, p peer, s *slot, h *handlers) {
	a.requests.Add(1)
	defer h.done(c)
	defer s.release() // a Watch gives its slot back once it is set up, GetEnv once it has replied
	defer p.release()
	defer c.Close()
	timeout := a.cfg.RequestTimeout
	if timeout <= 0 {
		timeout = requestTimeout
	}
	c.SetDeadline(time.Now().Add(timeout))
	if h.stopping.Load() {
		c.SetReadDeadline(time.Now()) // stop's may have come before the line above
	}
	rb := reqBufs.Get().(*reqBuf)
	rb.c, rb.n, rb.off = c, 0, 0
	defer rb.free() // the token
	t, payload, err := wire.ReadRequest(rb, rb.payload[:])
	if err != nil {
		if h.stopping.Load() {
			return // cut short by the stop, not the peer's fault
		}
		a.refuse(c, p, CodeBadRequest, "read request: "+err.Error())
		return
	}
	req, err := wire.DecodeRequest(t, payload)
	if err != nil {
		a.refuse(c, p, CodeBadRequest, "decode request: "+err.Error())
		return
	}
	a.noteRequest("workload", requestKind(req.Type)) // metrics.go
	// The request is in: the rest is the agent's work, which counts in
	// max_conns only.
	s.ready()
	identify(&p, c, req.Token)
	if e := a.missingKeys(); e != nil {
		a.refuse(c, p, e.Code, e.Message)
		return
	}
	switch req.Type {
	case wire.TypeGetEnv:
		a.sendEnv(c, p, s)
	case wire.TypeGetSecret:
		a.serveSecret(c, p, req)
	case wire.TypeWatch:
		a.serveWatch(c, p, req, s.release)
	default:
		a.refuse(c, p, CodeBadRequest, "unexpected request type "+req.Type.String())
	}
}

// reqBuf reads a request with one read(2) where the peer allows: a
// launcher writes its request in one write, so the first read takes the
// header and the payload together, which wire.ReadRequest alone reads
// apart (one read(2) per request less). It also holds the buffer the
// payload is decoded from; both are cleared before reuse (the token).
type reqBuf struct {
	c       *net.UnixConn
	ahead   [2048]byte // what the first read took; a request frame is at most 1,296 bytes
	n, off  int
	payload [2048]byte
}

var reqBufs = sync.Pool{New: func() any { return new(reqBuf) }}

// Read serves what the first read took, then reads the connection itself.
func (r *reqBuf) Read(p []byte) (int, error) {
	if r.off == r.n {
		if r.n > 0 {
			return r.c.Read(p)
		}
		n, err := r.c.Read(r.ahead[:])
		if n == 0 {
			return 0, err
		}
		r.n = n
	}
	k := copy(p, r.ahead[r.off:r.n])
	r.off += k
	return k, nil
}

func (r *reqBuf) free() {
	clear(r.ahead[:r.n])
	clear(r.payload[:])
	r.c = nil
	reqBufs.Put(r)
}

// sendEnv answers GetEnv. Once the reply is written the connection is
// closed and its slot given back, before the audit record is made: a
// launcher that has its reply and connects again at once must not find
// its previous connection still counted against max_conns.
func (a *Agent) sendEnv(c *net.UnixConn, p peer, s *slot) {
	defer a.noteGetEnv(time.Now()) // metrics.go
	a.awaitEngine(p)
	a.mu.RLock()
	w, e := a.match(p)
	if e != nil {
		a.mu.RUnlock()
		a.refuse(c, p, e.Code, e.Message)
		return
	}
	// Merged for this request into a Buf of its own, written after the
	// lock is released.
	frame := a.envFrame(w)
	rev := a.model.rev
	envRev := int64(w.envRev)
	w.noteServed(rev)
	id := w.reg.ID
	to := a.servedTo(w)
	a.mu.RUnlock()
	defer frame.Free()
	_, err := c.Write(frame.Bytes())
	c.Close()
	s.release()
	if err != nil {
		a.log.Debug("write env", "workload", id, "error", err)
		return
	}
	a.audit.write(to.record(auditRecord{Action: "serve", Scope: "workload:" + id, Workload: id, Revision: int64(rev),
		hmacsJSON: a.audit.servedJSON(id, envRev, frame.Bytes()), Socket: "workload"}), &p, a.recordName(p.uid))
	if a.log.IsDebug() {
		a.log.Debug("served", "workload", id, "revision", rev, "pid", p.pid)
	}
}

// refuse logs and audits a refusal, then answers with an Error frame: the
// record exists by the time the peer learns it was refused. A uid whose
// refusals come faster than the audit budget allows (auditBurst, then
// auditRate per second) has the excess counted instead, and the count goes
// into its next record, so a peer that hammers the socket with bad requests
// cannot flood the audit log or the agent's log.
func (a *Agent) refuse(c *net.UnixConn, p peer, code, msg string) {
	a.noteRefusal("workload", code) // metrics.go
	if ok, skipped := a.limiter("workload").auditBudget(p.uid); ok {
		reason := msg
		if skipped > 0 {
			reason = fmt.Sprintf("%s (and %d earlier refusals of this uid not recorded one by one: too many)", msg, skipped)
		}
		a.log.Info("refused", "code", code, "reason", reason, "pid", p.pid, "uid", p.uid)
		a.audit.write(auditRecord{Action: "refuse", Code: code, Reason: reason, Socket: "workload"}, &p, a.recordName(p.uid))
	}
	c.Write(wire.AppendError(nil, code, msg))
}

// The audit budget of refusals per uid: a burst, then a steady rate.
const (
	auditBurst = 50
	auditRate  = 5 // per second
)

type auditBucket struct {
	tokens  float64
	last    time.Time
	skipped int
}

// auditBudget says whether a refusal of uid may be recorded, and how many
// were skipped since the last one that was.
func (l *connLimiter) auditBudget(uid uint32) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	b := l.buckets[uid]
	if b == nil {
		if len(l.buckets) > 4096 {
			for u, x := range l.buckets {
				if now.Sub(x.last) > time.Minute && x.skipped == 0 {
					delete(l.buckets, u)
				}
			}
		}
		b = &auditBucket{tokens: auditBurst, last: now}
		l.buckets[uid] = b
	}
	b.tokens = min(auditBurst, b.tokens+now.Sub(b.last).Seconds()*auditRate)
	b.last = now
	if b.tokens < 1 {
		if b.skipped == 0 {
			l.a.log.Warn("refusals of a uid come too fast to record each; counting them", "uid", uid, "socket", l.socket)
		}
		b.skipped++
		return false, 0
	}
	b.tokens--
	n := b.skipped
	b.skipped = 0
	return true, n
}

// connLimiter counts the connections a socket holds, in all and per uid.
// A refusal is logged and audited at most once per uid per refuseEvery,
// with the number refused since, so a flood does not flood the audit log.
type connLimiter struct {
	a              *Agent
	socket         string
	max, maxPerUID int
	mu             sync.Mutex
	total          int
	perUID         map[uint32]int
	refused        map[uint32]*refusals
	acceptReports  everyGate
	lingering      atomic.Int32 // refused connections being drained (refuse)
	buckets        map[uint32]*auditBucket
}

type refusals struct {
	last  time.Time
	count int // refused since last
}

const refuseEvery = 10 * time.Second

// everyGate lets one event through per refuseEvery: for reports that a
// fault repeating in a tight loop would otherwise flood the log with.
type everyGate struct {
	mu   sync.Mutex
	last time.Time
}

// pass says whether this event is the one to report.
func (g *everyGate) pass() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if time.Since(g.last) < refuseEvery {
		return false
	}
	g.last = time.Now()
	return true
}

// limiter returns the limiter of a socket, made on first use.
func (a *Agent) limiter(socket string) *connLimiter {
	a.limMu.Lock()
	defer a.limMu.Unlock()
	if a.limiters == nil {
		a.limiters = map[string]*connLimiter{}
	}
	if l := a.limiters[socket]; l != nil {
		return l
	}
	l := &connLimiter{a: a, socket: socket, max: a.cfg.MaxConns, maxPerUID: a.cfg.MaxConnsPerUID,
		perUID: map[uint32]int{}, refused: map[uint32]*refusals{}, buckets: map[uint32]*auditBucket{}}
	if l.max <= 0 {
		l.max = 1024
	}
	if l.maxPerUID <= 0 {
		l.maxPerUID = 32
	}
	a.limiters[socket] = l
	return l
}

// slot is one connection's place in a connLimiter: its uid's slot while
// pending, and one of the total until released.
type slot struct {
	lim      *connLimiter
	uid      uint32
	pending  bool
	released bool
}

// ready gives back the uid's slot: the connection's request is in.
func (s *slot) ready() {
	s.lim.mu.Lock()
	defer s.lim.mu.Unlock()
	s.dropPending()
}

func (s *slot) dropPending() {
	if s.pending {
		s.pending = false
		if s.lim.perUID[s.uid]--; s.lim.perUID[s.uid] <= 0 {
			delete(s.lim.perUID, s.uid)
		}
	}
}

// release gives back whatever the connection still holds; it may be called
// more than once.
func (s *slot) release() {
	s.lim.mu.Lock()
	defer s.lim.mu.Unlock()
	s.dropPending()
	if !s.released {
		s.released = true
		s.lim.total--
	}
}

// acquire takes a slot for uid, or says why there is none.
func (l *connLimiter) acquire(uid uint32) (*slot, string) {
	l.mu.Lock()
	var msg string
	switch {
	case l.perUID[uid] >= l.maxPerUID:
		msg = fmt.Sprintf("uid %d already holds %d connections to the %s socket (max_conns_per_uid)", uid, l.maxPerUID, l.socket)
	case l.total >= l.max:
		msg = fmt.Sprintf("the %s socket already holds %d connections (max_conns)", l.socket, l.max)
	default:
		l.perUID[uid]++
		l.total++
		l.mu.Unlock()
		return &slot{lim: l, uid: uid, pending: true}, ""
	}
	now := time.Now()
	r := l.refused[uid]
	if r == nil {
		r = &refusals{}
		l.refused[uid] = r
	}
	r.count++
	report := now.Sub(r.last) >= refuseEvery
	n := r.count
	if report {
		r.last, r.count = now, 0
	}
	// Forget uids that have been quiet for a while, so the map stays small.
	if len(l.refused) > 4096 {
		for u, x := range l.refused {
			if now.Sub(x.last) >= refuseEvery && x.count == 0 {
				delete(l.refused, u)
			}
		}
	}
	l.mu.Unlock()
	if report {
		reason := fmt.Sprintf("%s; %d connection(s) refused (records of this uid are rate-limited to one per %s)", msg, n, refuseEvery)
		l.a.log.Warn("connection refused", "socket", l.socket, "code", CodeTooManyConnections, "uid", uid, "refused", n)
		l.a.audit.write(auditRecord{Action: "refuse", Code: CodeTooManyConnections, Reason: reason, Socket: l.socket}, &peer{uid: uid}, l.a.recordName(uid))
	}
	return nil, msg
}

// held returns the connections held, in all and by uid.
func (l *connLimiter) held() (int, map[uint32]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	by := make(map[uint32]int, len(l.perUID))
	for u, n := range l.perUID {
		by[u] = n
	}
	return l.total, by
}

// maxLingering bounds the refused connections being drained at once.
const maxLingering = 64

// refuse answers a connection over the limits and closes it. Closing at
// once would race the peer's request: a peer that writes after the close
// gets EPIPE and never reads the answer. So the write side is shut (the
// peer reads the answer, then EOF), what the peer sends is read and
// dropped for up to a second, then the connection closes. At most
// maxLingering refusals linger; beyond that, under a flood, they close at
// once.
func (l *connLimiter) refuse(c *net.UnixConn, answer []byte) {
	c.Write(answer) // a fresh socket's buffer takes it
	if l.lingering.Add(1) > maxLingering {
		l.lingering.Add(-1)
		c.Close()
		return
	}
	c.CloseWrite()
	go func() {
		defer l.lingering.Add(-1)
		c.SetReadDeadline(time.Now().Add(time.Second))
		io.CopyN(io.Discard, c, 64<<10)
		c.Close()
	}()
}

// noteAcceptError logs an accept failure at most once per refuseEvery.
func (l *connLimiter) noteAcceptError(err error) {
	if l.acceptReports.pass() {
		l.a.log.Warn("accept failed; waiting before the next", "socket", l.socket, "error", err)
	}
}

// limitedListener applies a connLimiter to the admin socket: a connection
// over the limits gets a 503 TOO_MANY_CONNECTIONS reply and is closed.
type limitedListener struct {
	*net.UnixListener
	lim *connLimiter
}

func (l *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return nil, err
		}
		p, err := peerOf(c)
		if err != nil {
			c.Close()
			continue
		}
		s, msg := l.lim.acquire(p.uid)
		if s == nil {
			body := fmt.Sprintf(`{"error":{"code":%q,"message":%q}}`+"\n", CodeTooManyConnections, msg)
			l.lim.refuse(c, fmt.Appendf(nil, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body))
			continue
		}
		return &limitedConn{UnixConn: c, slot: s}, nil
	}
}

// limitedConn gives its slot back when closed. An admin connection keeps
// its uid's slot for its whole life (keep-alive included).
type limitedConn struct {
	*net.UnixConn
	slot *slot
}

func (c *limitedConn) Close() error {
	err := c.UnixConn.Close()
	c.slot.release()
	return err
}

// unixConnOf finds the Unix connection under a net.Conn the admin server
// hands out.
func unixConnOf(c net.Conn) *net.UnixConn {
	switch x := c.(type) {
	case *net.UnixConn:
		return x
	case *limitedConn:
		return x.UnixConn
	}
	return nil
}
