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
		n, ok := unescapeJSON(buf.Bytes(), raw)
		if !ok {
			ferr = errBadString
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
// quotes) to dst, unescaped exactly as encoding/json does (invalid UTF-8
// and lone surrogates become U+FFFD), and returns the length. dst must
// hold 3*len(raw) bytes. It reports false for a string JSON does not
// allow: a bad escape, a quote or a control character.
func unescapeJSON(dst, raw []byte) (int, bool) {
	w := 0
	for r := 0; r < len(raw); {
		c := raw[r]
		switch {
		case c == '\\':
			if r+1 >= len(raw) {
				return 0, false
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
					return 0, false
				}
				r += 6
				if utf16.IsSurrogate(rr) {
					if dec := utf16.DecodeRune(rr, getu4(raw[r:])); dec != unicode.ReplacementChar {
						r += 6
						w += utf8.EncodeRune(dst[w:], dec)
						continue
					}
					rr = unicode.ReplacementChar
				}
				w += utf8.EncodeRune(dst[w:], rr)
				continue
			default:
				return 0, false
			}
			r += 2
			w++
		case c == '"' || c < ' ':
			return 0, false
		case c < utf8.RuneSelf:
			dst[w] = c
			r++
			w++
		default:
			rr, size := utf8.DecodeRune(raw[r:])
			r += size
			w += utf8.EncodeRune(dst[w:], rr)
		}
	}
	return w, true
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
