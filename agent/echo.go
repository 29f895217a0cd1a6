package agent

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/envlet/envlet/cache"
)

// Echoes of admin traffic in net/http's pooled buffers (issue 11 §3). The
// HTTP server reads each connection through a pooled 4 KiB bufio.Reader
// and writes through pooled bufio.Writers; a small request's body arrives
// in the reader's buffer with its headers, and a small reply is copied into
// the response's 2 KiB buffer. Those buffers are reused, never cleared, so
// a value written and then deleted lived on in them until overwritten. So:
//
//   - echoConn remembers the slices of the server's read buffer it filled
//     since the request began (the first Read of a connection is always
//     into that buffer: the request line), and once the body is read into
//     locked memory, forgetBody zeroes the body's bytes there: they are
//     consumed (the body was read to its end), so nothing the server still
//     needs is touched;
//   - echoConn zeroes what it wrote once the kernel has it: the bytes of a
//     bufio.Writer's buffer that are sent are dead (Flush resets it, a short
//     write moves the rest down first);
//   - writeJSON pads a reply that holds values past the response buffer's
//     size (padValueReply), so bufio passes it straight from locked memory
//     to the connection's writer instead of keeping a copy.
//
// The bytes travel unchanged in the kernel's socket buffers, which are not
// the agent's memory.

type echoKey struct{}

// echoListener wraps each accepted connection in an echoConn.
type echoListener struct{ net.Listener }

func (l echoListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &echoConn{Conn: c}, nil
}

// echoConn is an admin connection that clears its echoes.
type echoConn struct {
	net.Conn
	mu    sync.Mutex
	end   uintptr  // the end of the server's read buffer (of the first Read)
	reads [][]byte // what Reads put there since the request began
}

// maxEchoReads bounds the slices remembered: a request's headers and a
// small body take a few reads of the 4 KiB buffer.
const maxEchoReads = 64

func (c *echoConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		e := sliceEnd(p)
		if c.end == 0 {
			c.end = e
		}
		if e == c.end {
			if len(c.reads) == maxEchoReads {
				c.reads = append(c.reads[:0], c.reads[1:]...)
			}
			c.reads = append(c.reads, p[:n])
		}
		c.mu.Unlock()
	}
	return n, err
}

func (c *echoConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 && !inExecutable(p) {
		clear(p[:n])
	}
	return n, err
}

// sliceEnd is the address of the end of p's capacity: every slice of one
// buffer taken as buf[i:] ends there.
func sliceEnd(p []byte) uintptr {
	return uintptr(unsafe.Pointer(unsafe.SliceData(p))) + uintptr(cap(p))
}

// inExecutable reports whether p lies in the binary's own memory (a
// literal), which must not be written.
func inExecutable(p []byte) bool {
	a := uintptr(unsafe.Pointer(unsafe.SliceData(p)))
	for _, r := range exeRanges() {
		if a >= r[0] && a < r[1] {
			return true
		}
	}
	return false
}

// forgetBody zeroes the copies of body in the server's read buffer, then
// starts the next request's record. Called once the body is read to its
// end.
func (c *echoConn) forgetBody(body []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(body) > 0 {
		clearEchoes(c.reads, body)
	}
	c.reads = c.reads[:0]
}

// clearEchoes zeroes body where it lies in reads (consecutive reads of one
// stream): whole inside one read, or begun at the end of one read and
// continued in the next ones (or, past the remembered reads, read straight
// into locked memory).
func clearEchoes(reads [][]byte, body []byte) {
	for _, s := range reads {
		for off := 0; off < len(s); {
			j := bytes.Index(s[off:], body)
			if j < 0 {
				break
			}
			clear(s[off+j : off+j+len(body)])
			off += j + len(body)
		}
	}
	for i, s := range reads {
		// The longest suffix of s that begins the body.
		for k := min(len(s), len(body)-1); k >= 1; k-- {
			if s[len(s)-k] != body[0] || !bytes.Equal(s[len(s)-k:], body[:k]) {
				continue
			}
			rest, ok := body[k:], true
			var conts [][]byte
			for _, t := range reads[i+1:] {
				if len(rest) == 0 {
					break
				}
				m := min(len(t), len(rest))
				if !bytes.Equal(t[:m], rest[:m]) {
					ok = false
					break
				}
				conts = append(conts, t[:m])
				rest = rest[m:]
			}
			// A short suffix could begin the body by chance: with no
			// continuation seen, take only one long enough to be it.
			if !ok || (len(conts) == 0 && k < min(16, len(body))) {
				continue
			}
			clear(s[len(s)-k:])
			for _, t := range conts {
				clear(t)
			}
			break
		}
	}
}

// withEcho is the ConnContext part: it keeps the connection's echoConn.
func withEcho(ctx context.Context, c net.Conn) (context.Context, net.Conn) {
	if ec, ok := c.(*echoConn); ok {
		return context.WithValue(ctx, echoKey{}, ec), ec.Conn
	}
	return ctx, c
}

// forgetRequestBody clears the echoes of a request's body (see above).
func forgetRequestBody(r *http.Request, body []byte) {
	if ec, ok := r.Context().Value(echoKey{}).(*echoConn); ok {
		ec.forgetBody(body)
	}
}

// replyBufSize is net/http's buffer before chunking (bufferBeforeChunkingSize):
// a Write larger than it, into an empty buffer, is passed straight through.
const replyBufSize = 2048

// padValueReply pads a JSON reply that holds values with trailing newlines
// (insignificant in JSON) past replyBufSize, so the response's bufio.Writer
// keeps no copy of it. It returns the length to write.
func padValueReply(b []byte, n int) int {
	for n <= replyBufSize && n < len(b) {
		b[n] = '\n'
		n++
	}
	return n
}

// Replies that hold values: encoding/json builds its output in a pooled
// buffer that grows by copying, and each smaller copy it leaves behind
// holds the start of the reply, values included. So the values never go
// through it: writeValueReply puts a marker in place of each value string
// (valueStrings' fields), has encoding/json write the rest into locked
// memory, and writes each value, escaped by appendJSONString, in place of
// its marker in a second locked buffer.

// markValues replaces the value strings of the reply v (the fields
// valueStrings finds, in struct fields, pointers, slices) with markers, in
// place where they can be set, and returns the value the encoder should
// see and the replaced strings, in marker order.
func markValues(v any, prefix string) (any, []string) {
	rv := reflect.ValueOf(v)
	if !rv.IsValid() {
		return v, nil
	}
	// A struct held by value in the interface cannot be set: a copy can
	// (its slices still share their elements with v, which is fine: the
	// reply is not used after it is written).
	cp := reflect.New(rv.Type()).Elem()
	cp.Set(rv)
	var orig []string
	var walk func(v reflect.Value, value bool)
	walk = func(v reflect.Value, value bool) {
		switch v.Kind() {
		case reflect.Pointer, reflect.Interface:
			if !v.IsNil() {
				walk(v.Elem(), value)
			}
		case reflect.String:
			if value && v.CanSet() {
				orig = append(orig, v.String())
				v.SetString(prefix + strconv.Itoa(len(orig)-1) + "\"")
			}
		case reflect.Struct:
			t := v.Type()
			for i := 0; i < t.NumField(); i++ {
				if !t.Field(i).IsExported() {
					continue
				}
				f := v.Field(i)
				tag, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
				walk(f, (tag == "value" || tag == "issued_token") &&
					(f.Kind() == reflect.String || f.Kind() == reflect.Pointer && f.Type().Elem().Kind() == reflect.String))
			}
		case reflect.Slice, reflect.Array:
			for i := 0; i < v.Len(); i++ {
				walk(v.Index(i), value)
			}
		}
	}
	walk(cp, false)
	return cp.Interface(), orig
}

// splice writes enc (JSON holding markers) to a new locked Buf with each
// marker's value in its place, escaped. The markers end in a quote that
// encoding/json escapes as \", so a marker is found as a quote, prefix,
// digits, \", and its closing quote.
func splice(pool *cache.Pool, enc []byte, prefix string, vals []string) *cache.Buf {
	size := len(enc)
	for _, s := range vals {
		size += 6 * len(s) // the most escaping can make of it
	}
	out := pool.Alloc(size)
	b := out.Bytes()[:0]
	for rest := enc; ; {
		i := bytes.Index(rest, []byte(prefix))
		if i < 0 {
			b = append(b, rest...)
			break
		}
		j := i + len(prefix)
		k := j
		for k < len(rest) && rest[k] >= '0' && rest[k] <= '9' {
			k++
		}
		n, err := strconv.Atoi(string(rest[j:k]))
		if err != nil || n >= len(vals) || i == 0 || rest[i-1] != '"' || !bytes.HasPrefix(rest[k:], []byte(`\""`)) {
			b = append(b, rest[:j]...)
			rest = rest[j:]
			continue
		}
		// From the marker's opening quote to its closing one: the value,
		// quoted and escaped as the mounts' env.json is (envfile.go), read
		// in place (a view of the string, no copy).
		b = append(b, rest[:i-1]...)
		view := unsafe.Slice(unsafe.StringData(vals[n]), len(vals[n]))
		var ok bool
		if b, ok = appendJSONString(b, view); !ok {
			// Not UTF-8 (stored before such values were refused): as
			// encoding/json writes it.
			b, _ = appendJSONString(b, []byte(strings.ToValidUTF8(vals[n], "\uFFFD")))
		}
		rest = rest[k+3:]
	}
	// b stayed within out: size covers every escape.
	res := pool.Copy(b)
	out.Free()
	return res
}

// replyString is a value for a reply: a string over a copy in locked
// memory that the request's wipe list frees (zeroes) once the reply is
// written. No heap string holds the value, and nothing writes into a
// string (issue 15). Outside a request (tests) it is an ordinary string.
func replyString(r *http.Request, b []byte) string {
	l := requestWipes(r)
	if l == nil || len(b) == 0 {
		return string(b)
	}
	buf := bodyPool.Copy(b)
	l.mu.Lock()
	l.bufs = append(l.bufs, buf)
	l.mu.Unlock()
	return unsafe.String(unsafe.SliceData(buf.Bytes()), len(b))
}
