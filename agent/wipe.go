package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
	"unsafe"

	"github.com/envlet/envlet/cache"
)

// Fewer copies of values in the Go heap. The cache keeps stored values in
// locked memory and zeroes them when they go; what this file handles is the
// admin API's traffic, which passes values through ordinary buffers:
//
//   - a request body is read into locked memory (readBody), not through
//     io.ReadAll's growing heap buffers;
//   - it is decoded without json.Decoder, whose internal buffer would keep a
//     copy: strictUnmarshal checks the document with a Decoder over a copy
//     whose string values are masked (so unknown fields and wrong types are
//     still refused), then json.Unmarshal decodes the real bytes in place;
//   - a value field (lockedValue, jsonstr.go) decodes itself from the body
//     into locked memory, and a reply's values are strings over locked
//     memory (replyString, echo.go); both are freed when the request is
//     done (requestWipes). A registration's values are still strings,
//     unescaped by the marker scheme (jsonstr.go) and wiped (wipeString);
//   - a reply is encoded into locked memory with its values spliced in
//     after encoding, and the encoder's pooled buffer is cleared
//     (writeJSONLocked);
//   - the echoes in the HTTP server's pooled buffers are cleared (echo.go).
//
// What is left is listed in docs/operations.md (Memory).

// maskStrings returns a copy of a JSON document in which the contents of
// every string that is not an object key are replaced by 'x', keeping the
// length and the structure: what a strict Decoder needs to find unknown
// fields, wrong types and syntax errors, and no value.
func maskStrings(b []byte) []byte {
	out := make([]byte, len(b))
	copy(out, b)
	for i := 0; i < len(out); i++ {
		if out[i] != '"' {
			continue
		}
		start := i + 1
		j := start
		for j < len(out) && out[j] != '"' {
			if out[j] == '\\' {
				j++
			}
			j++
		}
		end := min(j, len(out)) // the closing quote, or the end of a truncated document
		k := end + 1
		for k < len(out) && (out[k] == ' ' || out[k] == '\t' || out[k] == '\n' || out[k] == '\r') {
			k++
		}
		if k >= len(out) || out[k] != ':' {
			for p := start; p < end; p++ {
				out[p] = 'x'
			}
		}
		i = end
	}
	return out
}

// strictUnmarshal decodes one JSON value from b into v, refusing unknown
// fields and trailing data, without leaving a copy of b in the heap: the
// strict checks run over maskStrings(b), the decoding over b itself
// (json.Unmarshal reads its input in place).
func strictUnmarshal(b []byte, v any) error {
	// Bytes that are not UTF-8 would be stored as U+FFFD (jsonstr.go). In
	// a value (lockedValue) they are ENV_VAR_INVALID_VALUE, so the value
	// fields decode first; anywhere else (a name, a registration) they are
	// a bad request.
	notUTF8 := !utf8.Valid(b)
	if notUTF8 && !hasLockedValues(v) {
		return errNotUTF8
	}
	masked := maskStrings(b)
	dec := json.NewDecoder(bytes.NewReader(masked))
	dec.DisallowUnknownFields()
	shadow := reflect.New(reflect.TypeOf(v).Elem()).Interface()
	err := dec.Decode(shadow)
	for _, lv := range lockedValues(shadow) {
		lv.buf.Free()
	}
	if err != nil {
		return err
	}
	if dec.More() {
		return errTrailing
	}
	// Value fields (lockedValue) decode themselves into locked memory;
	// other escaped strings are unescaped into locked memory (jsonstr.go).
	decode := func() error { return unmarshalUnescaped(bodyPool, b, v) }
	if hasLockedValues(v) {
		decode = func() error { return json.Unmarshal(b, v) }
	}
	if err := decode(); err != nil {
		for _, lv := range lockedValues(v) {
			lv.buf.Free()
		}
		return err
	}
	if notUTF8 {
		for _, lv := range lockedValues(v) {
			lv.buf.Free()
		}
		return errNotUTF8
	}
	return nil
}

var errNotUTF8 = errorf(CodeInvalidRequest, "the request body holds bytes that are not UTF-8; JSON would store U+FFFD instead, so it is refused")

var errTrailing = errors.New("trailing data after the object")

// readBody reads a request body of at most max bytes into locked memory.
// The caller frees the buffer (which zeroes it).
//
// The declared size is not trusted: memory grows as bytes arrive, from
// 4 KiB (less for a smaller declared body) by doubling up to max+1, so a
// client that declares a large body and sends nothing holds 4 KiB. All the
// bodies being read hold at most maxBodyInFlight bytes together; a read
// that would go over fails with errBodyBusy (BUSY, 503).
func readBody(pool *cache.Pool, r io.Reader, size int64, max int) (*cache.Buf, error) {
	n := 4096
	if size >= 0 && size < int64(n) {
		n = int(size) + 1 // +1 sees the end of the body without growing
	}
	n = min(n, max+1)
	if !reserveBody(n) {
		return nil, errBodyBusy
	}
	buf := pool.Alloc(n)
	held := n
	defer func() { releaseBody(held) }()
	used := 0
	for {
		if used == buf.Len() {
			if used > max {
				buf.Free()
				return nil, errBodyTooLarge
			}
			grow := min(2*buf.Len(), max+1)
			if !reserveBody(grow) {
				buf.Free()
				return nil, errBodyBusy
			}
			held += grow
			bigger := pool.Alloc(grow)
			copy(bigger.Bytes(), buf.Bytes())
			buf.Free()
			releaseBody(held - grow)
			held = grow
			buf = bigger
		}
		k, err := r.Read(buf.Bytes()[used:])
		used += k
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			buf.Free()
			return nil, err
		}
	}
	if used > max {
		buf.Free()
		return nil, errBodyTooLarge
	}
	out := pool.Alloc(used)
	copy(out.Bytes(), buf.Bytes()[:used])
	buf.Free()
	return out, nil
}

// maxBodyInFlight caps the locked memory of request bodies being read.
const maxBodyInFlight = 16 << 20

// bodyInFlight is the locked memory readBody holds now.
var bodyInFlight atomic.Int64

func reserveBody(n int) bool {
	if bodyInFlight.Add(int64(n)) > maxBodyInFlight {
		bodyInFlight.Add(-int64(n))
		return false
	}
	return true
}

func releaseBody(n int) { bodyInFlight.Add(-int64(n)) }

var errBodyBusy = errors.New("too many request bodies in flight")

var errBodyTooLarge = errors.New("request body too large")

// bodyPool holds admin request bodies and replies while they are handled.
var bodyPool = cache.NewPool()

// wipeList collects the locked Bufs of a request's values — decoded from
// its body (lockedValue) and put in its reply (replyString) — to free when
// the request is done.
type wipeList struct {
	mu   sync.Mutex
	bufs []*cache.Buf
}

type wipeKey struct{}

// requestWipes returns the request's wipe list, nil outside the admin
// handler.
func requestWipes(r *http.Request) *wipeList {
	l, _ := r.Context().Value(wipeKey{}).(*wipeList)
	return l
}

func withWipes(r *http.Request) (*http.Request, *wipeList) {
	l := &wipeList{}
	return r.WithContext(context.WithValue(r.Context(), wipeKey{}, l)), l
}

func (l *wipeList) addValues(vs []*lockedValue) {
	if l == nil {
		for _, v := range vs {
			v.buf.Free()
		}
		return
	}
	l.mu.Lock()
	for _, v := range vs {
		l.bufs = append(l.bufs, v.buf)
	}
	l.mu.Unlock()
}

func (l *wipeList) wipe() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, b := range l.bufs {
		b.Free()
	}
	l.bufs = nil
}

// valueStrings returns the value strings in v: fields tagged "value"
// (string or *string), the values of "runtime" and "execution" maps, and
// "issued_token", reached through pointers, structs, slices and maps.
// Names are left alone: they are not secret and may be kept.
func valueStrings(v any) []string {
	var out []string
	var walk func(v reflect.Value, wipe bool)
	walk = func(v reflect.Value, wipe bool) {
		switch v.Kind() {
		case reflect.Pointer, reflect.Interface:
			if !v.IsNil() {
				walk(v.Elem(), wipe)
			}
		case reflect.String:
			if wipe {
				out = append(out, v.String())
			}
		case reflect.Struct:
			t := v.Type()
			for i := 0; i < t.NumField(); i++ {
				if !t.Field(i).IsExported() {
					continue
				}
				f := v.Field(i)
				switch tag, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); {
				case (tag == "value" || tag == "issued_token") && (f.Kind() == reflect.String || f.Kind() == reflect.Pointer && f.Type().Elem().Kind() == reflect.String):
					walk(f, true)
				case (tag == "runtime" || tag == "execution") && f.Kind() == reflect.Map && f.Type().Elem().Kind() == reflect.String:
					walk(f, true)
				default:
					walk(f, false)
				}
			}
		case reflect.Slice, reflect.Array:
			for i := 0; i < v.Len(); i++ {
				walk(v.Index(i), wipe)
			}
		case reflect.Map:
			it := v.MapRange()
			for it.Next() {
				walk(it.Value(), wipe)
			}
		}
	}
	walk(reflect.ValueOf(v), false)
	return out
}

// wipeString zeroes the bytes of a string the JSON decoder or a []byte to
// string conversion made. Strings are immutable in Go, so this is only for
// values nobody reads again, and it leaves alone what it must not touch:
// strings of fewer than two bytes (the runtime serves those from a static
// table) and strings in the executable's own memory (literals such as
// "********").
func wipeString(s string) {
	if len(s) < 2 {
		return
	}
	p := uintptr(unsafe.Pointer(unsafe.StringData(s)))
	for _, r := range exeRanges() {
		if p >= r[0] && p < r[1] {
			return
		}
	}
	clear(unsafe.Slice(unsafe.StringData(s), len(s)))
}

var exeMaps struct {
	once   sync.Once
	ranges [][2]uintptr
}

// exeRanges are the address ranges the executable is mapped at (its text,
// read-only data and data), from /proc/self/maps. If they cannot be read,
// the whole address space counts, so nothing is wiped.
func exeRanges() [][2]uintptr {
	exeMaps.once.Do(func() {
		all := [][2]uintptr{{0, ^uintptr(0)}}
		b, err := readProcFile("/proc/self/maps", 4<<20)
		if err != nil {
			exeMaps.ranges = all
			return
		}
		exe, err := os.Readlink("/proc/self/exe")
		if err != nil {
			exeMaps.ranges = all
			return
		}
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) < 6 || strings.Join(f[5:], " ") != exe {
				continue
			}
			lo, hi, ok := strings.Cut(f[0], "-")
			if !ok {
				continue
			}
			var r [2]uintptr
			for i, h := range []string{lo, hi} {
				for _, c := range h {
					r[i] = r[i]<<4 | uintptr(strings.IndexRune("0123456789abcdef", c))
				}
			}
			exeMaps.ranges = append(exeMaps.ranges, r)
		}
		// Go puts literals in the executable's read-only data; without
		// those ranges nothing can be told apart.
		if len(exeMaps.ranges) == 0 {
			exeMaps.ranges = all
		}
	})
	return exeMaps.ranges
}

// writeJSONLocked writes v as indented JSON through locked memory: the
// encoder's pooled buffer is cleared once copied, the indented copy lives
// in the cache's memory and is zeroed when written.
//
// With pad, the reply is padded with newlines past net/http's response
// buffer (padValueReply, echo.go).
func writeJSONLocked(pool *cache.Pool, w io.Writer, v any, pad bool) error {
	// A reply with values: the values are spliced in after encoding
	// (echo.go), so encoding/json's buffers never hold one.
	var prefix string
	var vals []string
	if pad {
		var nonce [8]byte
		rand.Read(nonce[:])
		prefix = "envlet-value-" + hex.EncodeToString(nonce[:]) + "-"
		v, vals = markValues(v, prefix)
	}
	lw := &lockedWriter{pool: pool}
	defer lw.free()
	enc := json.NewEncoder(lw)
	if err := enc.Encode(v); err != nil {
		return err
	}
	if len(vals) > 0 {
		spliced := splice(pool, lw.out.Bytes()[:lw.n], prefix, vals)
		lw.out.Free()
		lw.out, lw.n = spliced, spliced.Len()
	}
	n := lw.n
	if pad && n <= replyBufSize {
		if lw.out.Len() <= replyBufSize {
			bigger := pool.Alloc(replyBufSize + 1)
			copy(bigger.Bytes(), lw.out.Bytes()[:n])
			lw.out.Free()
			lw.out = bigger
		}
		n = padValueReply(lw.out.Bytes(), n)
	}
	_, err := w.Write(lw.out.Bytes()[:n])
	return err
}

// marshalLocked is json.Marshal into locked memory, the encoder's pooled
// buffer cleared. The caller frees the result.
func marshalLocked(pool *cache.Pool, v any) (*cache.Buf, error) {
	lw := &lockedWriter{pool: pool, compact: true}
	if err := json.NewEncoder(lw).Encode(v); err != nil {
		lw.free()
		return nil, err
	}
	out := pool.Copy(lw.out.Bytes()[:lw.n])
	lw.free()
	return out, nil
}

// lockedWriter receives the encoder's output (which aliases the encoder's
// pooled buffer), indents it into locked memory and clears the original.
// It is written once per Encode.
type lockedWriter struct {
	pool    *cache.Pool
	compact bool // copy as is, less the encoder's trailing newline
	out     *cache.Buf
	n       int
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	defer clear(p)
	if l.compact {
		l.out = l.pool.Copy(bytes.TrimSuffix(p, []byte("\n")))
		l.n = l.out.Len()
		return len(p), nil
	}
	// Indentation adds at most the indent and a newline per element:
	// 4x plus slack covers the shallow replies of the API; beyond it the
	// buffer grows like any bytes.Buffer.
	l.out = l.pool.Alloc(4*len(p) + 256)
	dst := bytes.NewBuffer(l.out.Bytes()[:0])
	if err := json.Indent(dst, p, "", "  "); err != nil {
		return 0, err
	}
	if dst.Len() > 0 && &dst.Bytes()[0] != &l.out.Bytes()[0] {
		// Outgrew the locked buffer: fall back to the heap copy.
		b := dst.Bytes()
		l.out.Free()
		l.out = l.pool.Copy(b)
		clear(b)
	}
	l.n = dst.Len()
	return len(p), nil
}

func (l *lockedWriter) free() { l.out.Free() }
