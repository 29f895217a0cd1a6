package launcher

import (
	"errors"
	"io"
	"strconv"
	"time"

	"github.com/envlet/envlet/agent/wire"
	"golang.org/x/sys/unix"
)

// replyBuf is the buffer a reply is read into; an Env of a few hundred
// variables fits, a larger one gets its own allocation from wire.ReadFrame.
const replyBuf = 32 << 10

// ask sends req to the agent at c.socket and returns its reply frame. An
// Error frame comes back as the agent's refusal; any other type is the
// caller's to check.
//
// The socket is a raw fd rather than a net.Conn: package net would add some
// 600 KB (40%) to the binary, for one connect, one write and a few reads.
func (c client) ask(req wire.Request) (wire.Type, []byte, *failure) {
	fd, typ, payload, f := c.open(req)
	if f == nil {
		unix.Close(fd)
	}
	return typ, payload, f
}

// Retrying a busy agent: an agent at max_conns (TOO_MANY_CONNECTIONS), one
// out of some other resource (BUSY), a full listen backlog (EAGAIN), and an
// agent restarting — the socket file missing (ENOENT: the old agent removed
// it, the new one has not bound it yet), nobody listening on it yet
// (ECONNREFUSED), or the connection cut before the whole reply came (the
// agent killed mid-reply) — are waited out, 5 ms doubling to 200 ms, each
// wait jittered so that launchers refused together do not come back
// together, for at most c.retry (ENVLET_RETRY, default 2 s). Every request
// is a read, so asking again is safe. Nothing else is retried: an unknown
// workload, a bad token or a malformed reply gets the same answer every
// time.
const (
	retryMin     = 5 * time.Millisecond
	retryMax     = 200 * time.Millisecond
	defaultRetry = 2 * time.Second
)

// open is ask that leaves the connection open for more frames (Watch) and
// returns its fd; on failure the connection is closed.
func (c client) open(req wire.Request) (int, wire.Type, []byte, *failure) {
	start := time.Now()
	for delay := retryMin; ; delay = min(2*delay, retryMax) {
		fd, typ, payload, f := openOnce(c.socket, c.timeout, req)
		left := c.retry - time.Since(start)
		if f == nil || !f.transient || left <= 0 {
			return fd, typ, payload, f
		}
		// Between half the delay and all of it, by the clock's low bits.
		time.Sleep(min(delay/2+time.Duration(uint64(time.Now().UnixNano())%uint64(delay/2)), left))
	}
}

// openOnce is one attempt of open.
func openOnce(socket string, timeout time.Duration, req wire.Request) (int, wire.Type, []byte, *failure) {
	unreachable := func(action string, err error) *failure {
		return &failure{code: codeAgentUnreachable, msg: action + " " + socket + ": " + sysText(err, timeout), exit: exitFailure}
	}
	fd, err := dial(socket, timeout)
	if err != nil {
		f := unreachable("connect", err)
		f.transient = err == unix.ECONNREFUSED || err == unix.EAGAIN || err == unix.ENOENT
		return -1, 0, nil, f
	}
	fail := func(f *failure) (int, wire.Type, []byte, *failure) {
		unix.Close(fd)
		return -1, 0, nil, f
	}

	werr := writeAll(fd, wire.AppendRequest(nil, req))
	if werr != nil && werr != unix.EPIPE && werr != unix.ECONNRESET {
		return fail(unreachable("send request to", werr))
	}
	// After EPIPE, read anyway: an agent that refuses a peer before reading
	// its request may have left an Error frame that says why.
	typ, payload, err := wire.ReadFrame(fdReader(fd), make([]byte, 0, replyBuf))
	// A connection cut before the whole reply (EOF, a short frame, a reset:
	// the agent died or restarted mid-request) is transient.
	transient := err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, unix.ECONNRESET)
	var f *failure
	switch {
	case werr != nil && err != nil:
		f = unreachable("send request to", werr)
	case err == io.EOF:
		f = badReply("agent closed the connection without a reply")
	case errors.Is(err, unix.EAGAIN):
		f = unreachable("receive reply from", err)
	case err != nil:
		f = badReply(err.Error())
	case typ == wire.TypeError:
		f = refused(payload)
		transient = wire.Transient(f.code)
	default:
		return fd, typ, payload, nil
	}
	f.transient = transient
	return fail(f)
}

// dial connects a Unix stream socket to path. The timeout bounds connect (on
// a full backlog) and every later read and write, through SO_SNDTIMEO and
// SO_RCVTIMEO; zero means none.
func dial(path string, timeout time.Duration) (int, error) {
	// sun_path holds 108 bytes with the NUL; say so rather than EINVAL.
	if len(path) >= len(unix.RawSockaddrUnix{}.Path) {
		return -1, errors.New("socket path longer than " + strconv.Itoa(len(unix.RawSockaddrUnix{}.Path)-1) + " bytes")
	}
	// CLOEXEC so that the program we exec never inherits the connection.
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if timeout > 0 {
		tv := unix.NsecToTimeval(timeout.Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(fd)
			return -1, err
		}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	for {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
		// A socket with a timeout is not restarted after a signal handler
		// runs (SA_RESTART does not apply), so retry EINTR by hand here and
		// in every read and write.
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		// The Go runtime ignores SIGPIPE for fds other than 1 and 2, so a
		// closed peer shows as EPIPE here rather than killing us.
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// fdReader reads a blocking socket fd for wire.ReadFrame.
type fdReader int

func (fd fdReader) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(int(fd), p)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, err
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// sysText words a socket error for people: EAGAIN on a socket with a
// timeout means the timeout expired.
func sysText(err error, timeout time.Duration) string {
	if errors.Is(err, unix.EAGAIN) && timeout > 0 {
		return "timed out after " + durText(timeout) + " (ENVLET_TIMEOUT)"
	}
	return err.Error()
}

// durText words a duration for a message: "10s" for whole seconds, else
// milliseconds ("300ms"). time.Duration.String would link a kilobyte of
// formatting for these two messages.
func durText(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.Itoa(int(d/time.Second)) + "s"
	}
	return strconv.Itoa(int(d/time.Millisecond)) + "ms"
}
