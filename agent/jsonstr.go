package agent

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/envlet/envlet/cache"
)

// JSON strings with escapes. encoding/json unescapes such a string into a
// fresh heap buffer, then copies it into the string it stores: the buffer
// is garbage nobody wipes, and a multi-line secret (a PEM key) would leave
// a copy in the heap. unmarshalUnescaped decodes those strings itself, into
// locked memory: json.Unmarshal sees a copy of the document in which every
// escaped string (other than an object key) is replaced by a marker, and
// the markers it stored are then replaced by the strings unescaped here.
// The resulting strings are ordinary heap strings, wiped with the others
// (valueStrings, requestWipes).

var errBadString = errors.New("invalid JSON string")

// errChangedValue refuses a string that JSON would change on the way in:
// encoding/json stores a lone UTF-16 surrogate (\ud800) and bytes that are
// not UTF-8 as U+FFFD, so what is served would not be what was sent.
var errChangedValue = errorf(CodeInvalidValue, "a value holds a lone UTF-16 surrogate or bytes that are not UTF-8; "+
	"JSON would store U+FFFD instead, so it is refused (send text as UTF-8, binary as a file secret)")

// lockedValue is a JSON string value decoded straight into locked memory
// (issue 15): json.Unmarshal hands UnmarshalJSON a slice of its input (the
// request body, itself in locked memory), and the string is unescaped from
// there into a Buf of the body pool, with no heap string and no unsafe
// write in between. A string JSON would change (errChangedValue) is
// refused. decodeBody frees the Bufs when the request is done
// (requestWipes).
type lockedValue struct {
	buf *cache.Buf
}

// UnmarshalJSON decodes a JSON string; null leaves v as it is.
func (v *lockedValue) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		kind := map[byte]string{'{': "object", '[': "array", 't': "bool", 'f': "bool"}[b[0]]
		if kind == "" {
			kind = "number"
		}
		return &json.UnmarshalTypeError{Value: kind, Type: reflect.TypeOf("")}
	}
	raw := b[1 : len(b)-1]
	// Unescaping never lengthens: \uXXXX (6 bytes) is at most 3 bytes of
	// UTF-8, a surrogate pair (12) is 4, every other escape is 2 for 1.
	buf := bodyPool.Alloc(len(raw))
	n, err := unescapeJSON(buf.Bytes(), raw)
	if err != nil {
		buf.Free()
		return err
	}
	v.buf.Free() // a key given twice: the last wins, as for any field
	if n == len(raw) {
		v.buf = buf
		return nil
	}
	v.buf = bodyPool.Copy(buf.Bytes()[:n])
	buf.Free()
	return nil
}

// Bytes is the value; it is valid until the request is done.
func (v *lockedValue) Bytes() []byte { return v.buf.Bytes() }

// hasLockedValues reports whether v points to a struct with a field of type
// *lockedValue: its values decode themselves, and its other strings are
// names, so it needs no marker scheme (unmarshalUnescaped).
func hasLockedValues(v any) bool {
	t := reflect.TypeOf(v)
	if t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return false
	}
	for i := 0; i < t.Elem().NumField(); i++ {
		if t.Elem().Field(i).Type == reflect.TypeOf((*lockedValue)(nil)) {
			return true
		}
	}
	return false
}

// lockedValues returns the lockedValues of a decoded request body: the
// fields of type *lockedValue of the struct v points to.
func lockedValues(v any) []*lockedValue {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		return nil
	}
	var out []*lockedValue
	s := rv.Elem()
	for i := 0; i < s.NumField(); i++ {
		if !s.Type().Field(i).IsExported() {
			continue
		}
		if lv, ok := s.Field(i).Interface().(*lockedValue); ok && lv != nil {
			out = append(out, lv)
		}
	}
	return out
}

// unmarshalUnescaped is json.Unmarshal(b, v) without encoding/json's
// unescaping buffers. b must be a valid JSON document (strictUnmarshal
// checks it first).
func unmarshalUnescaped(pool *cache.Pool, b []byte, v any) error {
	spans := escapedStrings(b)
	if len(spans) == 0 {
		return json.Unmarshal(b, v)
	}
	var nonce [8]byte
	rand.Read(nonce[:])
	prefix := "envlet-escaped-" + hex.EncodeToString(nonce[:]) + "-"
	size := len(b)
	for k := range spans {
		size += len(prefix) + len(strconv.Itoa(k))
	}
	cp := pool.Alloc(size)
	defer cp.Free()
	out, last := cp.Bytes()[:0], 0
	for k, s := range spans {
		out = append(out, b[last:s[0]]...)
		out = append(out, prefix...)
		out = strconv.AppendInt(out, int64(k), 10)
		last = s[1]
	}
	out = append(out, b[last:]...)
	if err := json.Unmarshal(out, v); err != nil {
		return err
	}
	var ferr error
	fix := func(s string) (string, bool) {
		rest, ok := strings.CutPrefix(s, prefix)
		if !ok {
			return "", false
		}
		k, err := strconv.Atoi(rest)
		if err != nil || k < 0 || k >= len(spans) {
			return "", false
		}
		raw := b[spans[k][0]:spans[k][1]]
		buf := pool.Alloc(3*len(raw) + 4)
		defer buf.Free()
		n, err := unescapeJSON(buf.Bytes(), raw)
		if err != nil {
			ferr = err
			return "", false
		}
		return string(buf.Bytes()[:n]), true
	}
	replaceStrings(reflect.ValueOf(v), fix)
	return ferr
}

// escapedStrings returns the spans [start, end) of the contents of the
// strings in the JSON document b that hold a backslash and are not object
// keys.
func escapedStrings(b []byte) [][2]int {
	var spans [][2]int
	for i := 0; i < len(b); i++ {
		if b[i] != '"' {
			continue
		}
		start, esc := i+1, false
		j := start
		for j < len(b) && b[j] != '"' {
			if b[j] == '\\' {
				esc = true
				j++
			}
			j++
		}
		end := min(j, len(b))
		k := end + 1
		for k < len(b) && (b[k] == ' ' || b[k] == '\t' || b[k] == '\n' || b[k] == '\r') {
			k++
		}
		if esc && end < len(b) && (k >= len(b) || b[k] != ':') {
			spans = append(spans, [2]int{start, end})
		}
		i = end
	}
	return spans
}

// replaceStrings walks v (a pointer) and replaces each string s for which
// fix returns true, in struct fields, slices, arrays, pointers and map
// values.
func replaceStrings(v reflect.Value, fix func(string) (string, bool)) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			replaceStrings(v.Elem(), fix)
		}
	case reflect.Interface:
		if !v.IsNil() && v.CanSet() {
			e := reflect.New(v.Elem().Type()).Elem()
			e.Set(v.Elem())
			replaceStrings(e, fix)
			v.Set(e)
		}
	case reflect.String:
		if s, ok := fix(v.String()); ok && v.CanSet() {
			v.SetString(s)
		}
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				replaceStrings(v.Field(i), fix)
			}
		}
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			replaceStrings(v.Index(i), fix)
		}
	case reflect.Map:
		it := v.MapRange()
		for it.Next() {
			e := reflect.New(v.Type().Elem()).Elem()
			e.Set(it.Value())
			replaceStrings(e, fix)
			v.SetMapIndex(it.Key(), e)
		}
	}
}

// unescapeJSON writes the contents of a JSON string (raw, without its
// quotes) to dst, unescaped as encoding/json does, and returns the length;
// dst must hold len(raw) bytes. Where encoding/json would put U+FFFD
// instead of what was sent (a lone surrogate, bytes that are not UTF-8) it
// fails with errChangedValue; for a string JSON does not allow (a bad
// escape, a quote or a control character), with errBadString.
func unescapeJSON(dst, raw []byte) (int, error) {
	w := 0
	for r := 0; r < len(raw); {
		c := raw[r]
		switch {
		case c == '\\':
			if r+1 >= len(raw) {
				return 0, errBadString
			}
			switch raw[r+1] {
			case '"', '\\', '/':
				dst[w] = raw[r+1]
			case 'b':
				dst[w] = '\b'
			case 'f':
				dst[w] = '\f'
			case 'n':
				dst[w] = '\n'
			case 'r':
				dst[w] = '\r'
			case 't':
				dst[w] = '\t'
			case 'u':
				rr := getu4(raw[r:])
				if rr < 0 {
					return 0, errBadString
				}
				r += 6
				if utf16.IsSurrogate(rr) {
					dec := utf16.DecodeRune(rr, getu4(raw[r:]))
					if dec == unicode.ReplacementChar {
						return 0, errChangedValue
					}
					r += 6
					w += utf8.EncodeRune(dst[w:], dec)
					continue
				}
				w += utf8.EncodeRune(dst[w:], rr)
				continue
			default:
				return 0, errBadString
			}
			r += 2
			w++
		case c == '"' || c < ' ':
			return 0, errBadString
		case c < utf8.RuneSelf:
			dst[w] = c
			r++
			w++
		default:
			rr, size := utf8.DecodeRune(raw[r:])
			if rr == utf8.RuneError && size == 1 {
				return 0, errChangedValue
			}
			w += copy(dst[w:], raw[r:r+size])
			r += size
		}
	}
	return w, nil
}

// getu4 decodes \uXXXX at the start of s, or returns -1.
func getu4(s []byte) rune {
	if len(s) < 6 || s[0] != '\\' || s[1] != 'u' {
		return -1
	}
	var r rune
	for _, c := range s[2:6] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r*16 + rune(c)
	}
	return r
}
