package wire

import (
	"errors"
	"io"
	"strconv"
)

// Version is the protocol version this package speaks, the byte at offset 4.
const Version = 1

// Magic opens every frame.
const Magic = "ENVL"

// HeaderSize is the length of a frame header; the payload follows it.
const HeaderSize = 12

// Hard limits. Every decoder rejects what exceeds them.
const (
	MaxPayload = 16 << 20 // bytes of one payload
	MaxToken   = 1024     // bytes of a token
	MaxName    = 256      // bytes of a variable or secret name
	MaxValue   = 1 << 20  // bytes of one value
	MaxEntries = 65536    // entries of one Env frame
)

// Type is the frame type, the byte at offset 5.
type Type uint8

// Frame types. Requests go from the launcher to the agent, replies back.
const (
	TypeGetEnv    Type = 0x01
	TypeGetSecret Type = 0x02
	TypeWatch     Type = 0x03
	TypeEnv       Type = 0x81
	TypeSecret    Type = 0x82
	TypeChanged   Type = 0x83
	TypeError     Type = 0xFF
)

// String returns the name of t as the specification spells it, or its number
// for a type this version does not know.
func (t Type) String() string {
	switch t {
	case TypeGetEnv:
		return "GetEnv"
	case TypeGetSecret:
		return "GetSecret"
	case TypeWatch:
		return "Watch"
	case TypeEnv:
		return "Env"
	case TypeSecret:
		return "Secret"
	case TypeChanged:
		return "Changed"
	case TypeError:
		return "Error"
	}
	return "type 0x" + strconv.FormatUint(uint64(t), 16)
}

// Sentinel errors. Every error a decoder returns wraps one of them.
var (
	ErrBadMagic  = errors.New("bad magic")
	ErrVersion   = errors.New("unsupported protocol version")
	ErrType      = errors.New("unknown frame type")
	ErrReserved  = errors.New("reserved bytes not zero")
	ErrTooLarge  = errors.New("too large")
	ErrTruncated = errors.New("truncated")
	ErrTrailing  = errors.New("trailing bytes")
	ErrInvalid   = errors.New("invalid")
)

// wireError says which action and field failed; it is built only on the
// failure path, so its strings cost nothing when frames are good.
type wireError struct {
	op     string // "read frame", "decode Env", …
	field  string // "entry 3 name"; empty for the frame itself
	err    error
	detail string // numbers that help, never a value
}

func (e *wireError) Error() string {
	s := e.op + ": "
	if e.field != "" {
		s += e.field + ": "
	}
	s += e.err.Error()
	if e.detail != "" {
		s += " (" + e.detail + ")"
	}
	return s
}

func (e *wireError) Unwrap() error { return e.err }

func fail(op, field string, err error, detail string) error {
	return &wireError{op: op, field: field, err: err, detail: detail}
}

// maxPayload is the largest payload a frame of type t can hold given the
// field limits, so ReadFrame can refuse an oversized frame from its header.
func maxPayload(t Type) (int, bool) {
	switch t {
	case TypeGetEnv, TypeWatch:
		return 2 + MaxToken, true
	case TypeGetSecret:
		return 2 + MaxToken + 2 + MaxName, true
	case TypeEnv:
		return MaxPayload, true
	case TypeSecret:
		return 4 + MaxValue, true
	case TypeChanged:
		return 8, true
	case TypeError:
		return 2 + 0xFFFF + 2 + 0xFFFF, true
	}
	return 0, false
}

// growStep is the most ReadFrame sets aside for a payload before bytes
// arrive to fill it.
const growStep = 64 << 10

// ReadFrame reads one frame from r and returns its type and payload.
//
// The payload is buf[:n] when cap(buf) >= n, so a caller that reuses buf
// reads without allocating; otherwise it is a new slice of exactly n bytes.
// Short reads are retried until the frame is complete. The header is checked
// in full, n included, before any payload is read: a large declared length
// is trusted only as bytes arrive, memory growing from 64 KiB by doubling up
// to n, so a peer that declares 16 MiB and sends nothing costs little.
//
// Outcomes:
//   - nil error: a well-formed header and n payload bytes. The payload is
//     not decoded; pass it to the Decode function of its type.
//   - io.EOF, unwrapped: r ended before the first byte of a frame, the
//     clean end of a stream.
//   - an error wrapping io.ErrUnexpectedEOF: r ended inside a frame.
//   - an error wrapping ErrBadMagic, ErrVersion, ErrType, ErrReserved or
//     ErrTooLarge: the header is not one this version accepts.
//   - any other error from r, wrapped.
func ReadFrame(r io.Reader, buf []byte) (Type, []byte, error) {
	return readFrame(r, buf, "read frame", false)
}

// ReadRequest is ReadFrame for a server: it reads one request frame
// (GetEnv, GetSecret or Watch) and refuses any other type from its header,
// before a payload byte is read or any memory is set aside for it. The
// payload limits are a request's (at most 2+MaxToken+2+MaxName bytes), so a
// peer cannot make the server hold more than that however large a length
// it declares. Outcomes are those of ReadFrame; a reply type wraps ErrType.
func ReadRequest(r io.Reader, buf []byte) (Type, []byte, error) {
	return readFrame(r, buf, "read request", true)
}

// readFrame is ReadFrame, and ReadRequest when requestsOnly; op begins the
// errors of the header read and of the payload.
func readFrame(r io.Reader, buf []byte, op string, requestsOnly bool) (Type, []byte, error) {
	var hdr []byte
	if cap(buf) >= HeaderSize {
		hdr = buf[:HeaderSize]
	} else {
		hdr = make([]byte, HeaderSize)
	}
	if _, err := io.ReadFull(r, hdr); err != nil {
		if err == io.EOF {
			return 0, nil, io.EOF
		}
		return 0, nil, fail(op, "header", err, "")
	}
	if t := Type(hdr[5]); requestsOnly && string(hdr[0:4]) == Magic && hdr[4] == Version && !isRequest(t) {
		return 0, nil, fail(op, "", ErrType, t.String()+" is not a request")
	}
	t, n, err := parseHeader(hdr)
	if err != nil {
		return 0, nil, err
	}
	p, err := readPayload(r, buf, n)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, fail(op, t.String()+" payload", err, strconv.Itoa(n)+" bytes declared")
	}
	return t, p, nil
}

func parseHeader(h []byte) (Type, int, error) {
	const op = "read frame"
	if string(h[0:4]) != Magic {
		// The peer's bytes are not echoed: they could be anything, a
		// secret included, and this error reaches logs and the audit log.
		return 0, 0, fail(op, "", ErrBadMagic, "")
	}
	if h[4] != Version {
		return 0, 0, fail(op, "", ErrVersion, "got "+strconv.Itoa(int(h[4]))+", want "+strconv.Itoa(Version))
	}
	t := Type(h[5])
	limit, ok := maxPayload(t)
	if !ok {
		return 0, 0, fail(op, "", ErrType, t.String())
	}
	if h[6] != 0 || h[7] != 0 {
		return 0, 0, fail(op, t.String(), ErrReserved, "")
	}
	// Compare as uint64 so a length near 4 GiB cannot wrap on a 32-bit int.
	n := uint64(u32(h[8:12]))
	if n > uint64(limit) {
		return 0, 0, fail(op, t.String()+" payload", ErrTooLarge,
			strconv.FormatUint(n, 10)+" bytes declared, limit "+strconv.Itoa(limit))
	}
	return t, int(n), nil
}

func readPayload(r io.Reader, buf []byte, n int) ([]byte, error) {
	if n <= cap(buf) {
		p := buf[:n]
		_, err := io.ReadFull(r, p)
		return p, err
	}
	if n <= growStep {
		p := make([]byte, n)
		_, err := io.ReadFull(r, p)
		return p, err
	}
	p := make([]byte, growStep)
	got := 0
	for {
		m, err := io.ReadFull(r, p[got:])
		got += m
		if err != nil {
			if err == io.EOF && got > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if got == n {
			return p, nil
		}
		next := make([]byte, min(2*len(p), n))
		copy(next, p)
		p = next
	}
}

// AppendFrame appends a frame of type t holding payload to dst. It panics if
// payload is longer than a u32 can say (see the package doc on encoding).
func AppendFrame(dst []byte, t Type, payload []byte) []byte {
	dst = appendHeader(dst, t, len(payload))
	return append(dst, payload...)
}

func appendHeader(dst []byte, t Type, n int) []byte {
	if uint64(n) > 0xFFFFFFFF {
		panic("wire: payload of " + strconv.Itoa(n) + " bytes does not fit a frame")
	}
	dst = append(dst, Magic...)
	dst = append(dst, Version, byte(t), 0, 0)
	return appendU32(dst, uint32(n))
}

// grow returns dst with room for n more bytes, so an Append function that
// knows its frame's size allocates at most once.
func grow(dst []byte, n int) []byte {
	if cap(dst)-len(dst) >= n {
		return dst
	}
	next := make([]byte, len(dst), len(dst)+n)
	copy(next, dst)
	return next
}

func appendU16(b []byte, v uint16) []byte { return append(b, byte(v>>8), byte(v)) }

func appendU32(b []byte, v uint32) []byte {
	return append(b, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

func appendU64(b []byte, v uint64) []byte {
	return append(b, byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32),
		byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

func appendStr16(b []byte, field, s string) []byte {
	if len(s) > 0xFFFF {
		panic("wire: " + field + " of " + strconv.Itoa(len(s)) + " bytes does not fit a str16")
	}
	return append(appendU16(b, uint16(len(s))), s...)
}

func appendBytes16(b []byte, field string, p []byte) []byte {
	if len(p) > 0xFFFF {
		panic("wire: " + field + " of " + strconv.Itoa(len(p)) + " bytes does not fit a bytes16")
	}
	return append(appendU16(b, uint16(len(p))), p...)
}

func appendBytes32(b []byte, field string, p []byte) []byte {
	if uint64(len(p)) > 0xFFFFFFFF {
		panic("wire: " + field + " of " + strconv.Itoa(len(p)) + " bytes does not fit a bytes32")
	}
	return append(appendU32(b, uint32(len(p))), p...)
}

func u16(b []byte) uint16 { return uint16(b[0])<<8 | uint16(b[1]) }

func u32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func u64(b []byte) uint64 {
	return uint64(u32(b[0:4]))<<32 | uint64(u32(b[4:8]))
}

// decoder walks a payload field by field. The first failure sticks, so a
// Decode function reads every field and checks err once where it must stop.
// Field names are constants and the entry number is kept apart, so that
// error text is only built on the failure path.
type decoder struct {
	op    string
	p     []byte
	entry int // index of the Env entry being read, or -1
	err   error
}

func newDecoder(op string, p []byte) decoder { return decoder{op: op, p: p, entry: -1} }

func (d *decoder) fail(field string, err error, detail string) {
	if d.entry >= 0 {
		field = "entry " + strconv.Itoa(d.entry) + " " + field
	}
	d.err = fail(d.op, field, err, detail)
}

func (d *decoder) take(field string, n int) []byte {
	if d.err != nil {
		return nil
	}
	if n > len(d.p) {
		d.fail(field, ErrTruncated, "need "+strconv.Itoa(n)+" bytes, have "+strconv.Itoa(len(d.p)))
		return nil
	}
	b := d.p[:n:n]
	d.p = d.p[n:]
	return b
}

func (d *decoder) u8(field string) uint8 {
	if b := d.take(field, 1); d.err == nil {
		return b[0]
	}
	return 0
}

func (d *decoder) u32(field string) uint32 {
	if b := d.take(field, 4); d.err == nil {
		return u32(b)
	}
	return 0
}

func (d *decoder) u64(field string) uint64 {
	if b := d.take(field, 8); d.err == nil {
		return u64(b)
	}
	return 0
}

// bytes16 reads a u16 length and that many bytes, rejecting more than limit.
func (d *decoder) bytes16(field string, limit int) []byte {
	b := d.take(field, 2)
	if d.err != nil {
		return nil
	}
	n := int(u16(b))
	if n > limit {
		d.fail(field, ErrTooLarge, strconv.Itoa(n)+" bytes, limit "+strconv.Itoa(limit))
		return nil
	}
	return d.take(field, n)
}

// bytes32 reads a u32 length and that many bytes, rejecting more than limit.
func (d *decoder) bytes32(field string, limit int) []byte {
	b := d.take(field, 4)
	if d.err != nil {
		return nil
	}
	n := uint64(u32(b))
	if n > uint64(limit) {
		d.fail(field, ErrTooLarge, strconv.FormatUint(n, 10)+" bytes, limit "+strconv.Itoa(limit))
		return nil
	}
	return d.take(field, int(n))
}

// name reads a str16 name and applies the name rule of the package doc.
func (d *decoder) name(field string) []byte {
	b := d.bytes16(field, MaxName)
	if d.err != nil {
		return nil
	}
	if len(b) == 0 {
		d.fail(field, ErrInvalid, "empty")
		return nil
	}
	for _, c := range b {
		if c == '=' || c == 0 {
			d.fail(field, ErrInvalid, "holds '=' or NUL")
			return nil
		}
	}
	return b
}

// end fails unless the payload has been consumed exactly, and returns the
// decoder's first error.
func (d *decoder) end() error {
	if d.err == nil && len(d.p) != 0 {
		d.entry = -1
		d.fail("", ErrTrailing, strconv.Itoa(len(d.p))+" bytes after the last field")
	}
	return d.err
}
