package launcher

import (
	"io"
	"time"

	"github.com/envlet/envlet/agent/wire"
	"golang.org/x/sys/unix"
)

// Reconnection backoff: the first retry soon (an agent restart takes a
// moment), then doubling up to a bound, for as long as it takes.
const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 5 * time.Second
)

// watcher owns the Watch connection: it reads the agent's Changed frames,
// fetches the environment after each, and when the connection breaks it
// reconnects, forever. It reports to the supervisor's loop as events and
// shares no state with it.
type watcher struct {
	c       client
	environ []string
}

// open connects and sends Watch. It returns the connection, the first Env
// the agent answers with merged into the launcher's environment, and its
// revision. The connection's receive timeout (ENVLET_TIMEOUT) bounds that
// first reply only: Changed frames come whenever they come.
func (w *watcher) open() (int, []string, uint64, *failure) {
	fd, typ, payload, f := w.c.open(wire.Request{Type: wire.TypeWatch, Token: w.c.token})
	if f != nil {
		return -1, nil, 0, f
	}
	env, rev, f := mergeReply(w.environ, typ, payload)
	if f == nil && w.c.timeout > 0 {
		var none unix.Timeval
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &none); err != nil {
			f = &failure{code: codeAgentUnreachable, msg: "set up the watch connection: " + err.Error(), exit: exitFailure}
		}
	}
	if f != nil {
		unix.Close(fd)
		return -1, nil, 0, f
	}
	return fd, env, rev, nil
}

// run follows the connection fd until it breaks, then reconnects, and so
// on; it never returns (the process ends with the loop).
func (w *watcher) run(fd int, events chan<- event) {
	for {
		f := w.follow(fd, events)
		unix.Close(fd)
		events <- event{kind: lost, f: f}
		var env []string
		var rev uint64
		for backoff := backoffMin; ; backoff = min(2*backoff, backoffMax) {
			time.Sleep(backoff)
			if fd, env, rev, f = w.open(); f == nil {
				break
			}
		}
		events <- event{kind: reconnected, rev: rev, env: env}
	}
}

// follow reads Changed frames from fd and reports each with the
// environment fetched after it (a separate GetEnv: Changed carries only the
// revision). It returns why the connection ended.
func (w *watcher) follow(fd int, events chan<- event) *failure {
	buf := make([]byte, 0, 64)
	r := &errnoReader{fd: fd}
	for {
		typ, payload, err := wire.ReadFrame(r, buf)
		switch {
		case err == io.EOF:
			return &failure{code: codeAgentUnreachable, msg: "the agent closed the watch connection", exit: exitFailure}
		case r.err != nil:
			return &failure{code: codeAgentUnreachable, msg: "read the watch connection: " + r.err.Error(), exit: exitFailure}
		case err != nil:
			return badReply(err.Error())
		case typ == wire.TypeError:
			return refused(payload)
		case typ != wire.TypeChanged:
			return badReply("want a Changed frame, got " + typ.String())
		}
		rev, err := wire.DecodeChanged(payload)
		if err != nil {
			return badReply(err.Error())
		}
		env, _, f := w.c.getEnv(w.environ)
		events <- event{kind: changed, rev: rev, env: env, f: f}
	}
}

// errnoReader is fdReader that keeps the socket's own error apart from the
// framing errors wire.ReadFrame wraps it in (errors.As would link 10 KB of
// reflection for this one test).
type errnoReader struct {
	fd  int
	err error
}

func (r *errnoReader) Read(p []byte) (int, error) {
	n, err := fdReader(r.fd).Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}
