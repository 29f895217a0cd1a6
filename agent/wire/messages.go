package wire

import (
	"bytes"
	"strconv"
)

// Entry is one step of an Env reply: set Name to Value, or, when Unset,
// remove Name. Value is empty on an unset entry.
type Entry struct {
	Name  string
	Value []byte
	Unset bool
}

// Request is what a launcher asks: TypeGetEnv, TypeGetSecret or TypeWatch,
// the token (empty when none), and for TypeGetSecret the secret's name.
type Request struct {
	Type  Type
	Token []byte
	Name  string
}

// isRequest reports whether t travels from the launcher to the agent.
func isRequest(t Type) bool {
	return t == TypeGetEnv || t == TypeGetSecret || t == TypeWatch
}

// AppendRequest appends req as a whole frame to dst. Name is written for
// TypeGetSecret only. It panics if req.Type is not a request type, or on a
// field too long for its prefix (see the package doc on encoding).
func AppendRequest(dst []byte, req Request) []byte {
	if !isRequest(req.Type) {
		panic("wire: AppendRequest of a " + req.Type.String() + " frame")
	}
	n := 2 + len(req.Token)
	if req.Type == TypeGetSecret {
		n += 2 + len(req.Name)
	}
	dst = grow(dst, HeaderSize+n)
	dst = appendHeader(dst, req.Type, n)
	dst = appendBytes16(dst, "token", req.Token)
	if req.Type == TypeGetSecret {
		dst = appendStr16(dst, "name", req.Name)
	}
	return dst
}

// DecodeRequest decodes the payload of a request frame of type t. Token
// aliases payload. Errors wrap ErrType when t is not a request type, and
// otherwise ErrTruncated, ErrTooLarge, ErrInvalid or ErrTrailing.
func DecodeRequest(t Type, payload []byte) (Request, error) {
	if !isRequest(t) {
		return Request{}, fail("decode request", "", ErrType, t.String()+" is not a request")
	}
	d := newDecoder(decodeOp(t), payload)
	req := Request{Type: t}
	req.Token = d.bytes16("token", MaxToken)
	if t == TypeGetSecret {
		if name := d.name("name"); d.err == nil {
			req.Name = string(name)
		}
	}
	if err := d.end(); err != nil {
		return Request{}, err
	}
	return req, nil
}

func decodeOp(t Type) string {
	switch t {
	case TypeGetEnv:
		return "decode GetEnv"
	case TypeGetSecret:
		return "decode GetSecret"
	case TypeWatch:
		return "decode Watch"
	}
	return "decode " + t.String()
}

// EnvSize returns the length in bytes of the whole Env frame AppendEnv
// writes for entries, so the agent can check it against
// HeaderSize+MaxPayload before building it.
func EnvSize(entries []Entry) int {
	n := HeaderSize + 8 + 4
	for _, e := range entries {
		n += 1 + 2 + len(e.Name) + 4
		if !e.Unset {
			n += len(e.Value)
		}
	}
	return n
}

// AppendEnv appends an Env frame of revision rev and entries to dst, in one
// allocation at most, and in place, with none, when dst has EnvSize(entries)
// bytes of spare capacity (the agent builds frames in locked memory that
// way). An unset entry is written with an empty value whatever
// its Value holds. It panics on a field too long for its prefix, or on more
// entries than a u32 counts (see the package doc on encoding).
func AppendEnv(dst []byte, rev uint64, entries []Entry) []byte {
	if uint64(len(entries)) > 0xFFFFFFFF {
		panic("wire: too many Env entries for a frame")
	}
	size := EnvSize(entries)
	dst = grow(dst, size)
	dst = appendHeader(dst, TypeEnv, size-HeaderSize)
	dst = appendU64(dst, rev)
	dst = appendU32(dst, uint32(len(entries)))
	for _, e := range entries {
		var flags byte
		value := e.Value
		if e.Unset {
			flags, value = 1, nil
		}
		dst = append(dst, flags)
		dst = appendStr16(dst, "name", e.Name)
		dst = appendBytes32(dst, "value", value)
	}
	return dst
}

// minEntry is the size of an Env entry with an empty name and value; the
// declared count is checked against it before the entries are set aside.
const minEntry = 1 + 2 + 4

// DecodeEnv decodes an Env payload. Values alias payload; names are copied.
// Errors wrap ErrTruncated, ErrTooLarge, ErrInvalid or ErrTrailing and name
// the entry by number, never by its name or value.
func DecodeEnv(payload []byte) (rev uint64, entries []Entry, err error) {
	d := newDecoder("decode Env", payload)
	rev = d.u64("revision")
	count := d.u32("count")
	if d.err != nil {
		return 0, nil, d.err
	}
	if count > MaxEntries {
		d.fail("count", ErrTooLarge, strconv.FormatUint(uint64(count), 10)+" entries, limit "+strconv.Itoa(MaxEntries))
		return 0, nil, d.err
	}
	// A count the payload cannot hold is refused before the slice is made,
	// so memory follows bytes received, not bytes claimed.
	if uint64(count)*minEntry > uint64(len(d.p)) {
		d.fail("count", ErrTruncated, strconv.FormatUint(uint64(count), 10)+" entries cannot fit "+strconv.Itoa(len(d.p))+" bytes")
		return 0, nil, d.err
	}
	entries = make([]Entry, 0, count)
	for i := range int(count) {
		d.entry = i
		flags := d.u8("flags")
		if d.err == nil && flags&^1 != 0 {
			d.fail("flags", ErrInvalid, "unknown bits 0x"+strconv.FormatUint(uint64(flags), 16))
		}
		name := d.name("name")
		value := d.bytes32("value", MaxValue)
		if d.err != nil {
			return 0, nil, d.err
		}
		e := Entry{Name: string(name), Unset: flags&1 != 0}
		switch {
		case e.Unset && len(value) != 0:
			d.fail("value", ErrInvalid, "unset entry with a value")
		case bytes.IndexByte(value, 0) >= 0:
			d.fail("value", ErrInvalid, "holds NUL")
		case !e.Unset:
			e.Value = value
		}
		if d.err != nil {
			return 0, nil, d.err
		}
		entries = append(entries, e)
	}
	if err := d.end(); err != nil {
		return 0, nil, err
	}
	return rev, entries, nil
}

// AppendSecret appends a Secret frame holding value to dst.
func AppendSecret(dst []byte, value []byte) []byte {
	dst = grow(dst, HeaderSize+4+len(value))
	dst = appendHeader(dst, TypeSecret, 4+len(value))
	return appendBytes32(dst, "value", value)
}

// DecodeSecret decodes a Secret payload; the value aliases payload and may
// hold any bytes. Errors wrap ErrTruncated, ErrTooLarge or ErrTrailing.
func DecodeSecret(payload []byte) ([]byte, error) {
	d := newDecoder("decode Secret", payload)
	value := d.bytes32("value", MaxValue)
	if err := d.end(); err != nil {
		return nil, err
	}
	return value, nil
}

// AppendChanged appends a Changed frame announcing revision rev to dst.
func AppendChanged(dst []byte, rev uint64) []byte {
	dst = grow(dst, HeaderSize+8)
	dst = appendHeader(dst, TypeChanged, 8)
	return appendU64(dst, rev)
}

// DecodeChanged decodes a Changed payload. Errors wrap ErrTruncated or
// ErrTrailing.
func DecodeChanged(payload []byte) (uint64, error) {
	d := newDecoder("decode Changed", payload)
	rev := d.u64("revision")
	if err := d.end(); err != nil {
		return 0, err
	}
	return rev, nil
}

// AppendError appends an Error frame to dst. It cuts code and msg to 65535
// bytes rather than panic, because it is how failures get reported. An empty
// code makes a frame every decoder rejects; always give one.
func AppendError(dst []byte, code, msg string) []byte {
	code, msg = cut16(code), cut16(msg)
	n := 2 + len(code) + 2 + len(msg)
	dst = grow(dst, HeaderSize+n)
	dst = appendHeader(dst, TypeError, n)
	dst = appendStr16(dst, "code", code)
	return appendStr16(dst, "message", msg)
}

func cut16(s string) string {
	if len(s) > 0xFFFF {
		return s[:0xFFFF]
	}
	return s
}

// DecodeError decodes an Error payload. Errors wrap ErrTruncated,
// ErrInvalid (empty code) or ErrTrailing.
func DecodeError(payload []byte) (code, msg string, err error) {
	d := newDecoder("decode Error", payload)
	c := d.bytes16("code", 0xFFFF)
	if d.err == nil && len(c) == 0 {
		d.fail("code", ErrInvalid, "empty")
	}
	m := d.bytes16("message", 0xFFFF)
	if err := d.end(); err != nil {
		return "", "", err
	}
	return string(c), string(m), nil
}
