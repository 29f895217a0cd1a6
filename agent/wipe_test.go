package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/envlet/envlet/cache"
)

// oldStrict is how bodies were decoded before wipe.go: a strict Decoder.
func oldStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errTrailing
	}
	return nil
}

func TestMaskStrings(t *testing.T) {
	for in, want := range map[string]string{
		`{"value":"secret","secret":true}`:    `{"value":"xxxxxx","secret":true}`,
		`{"value" : "a\"b\\c"}`:               `{"value" : "xxxxxxx"}`,
		`{"m":{"uid":1},"runtime":{"A":"v"}}`: `{"m":{"uid":1},"runtime":{"A":"x"}}`,
		`["a","b"]`:                           `["x","x"]`,
		`{"value":"unterminated`:              `{"value":"xxxxxxxxxxxx`,
	} {
		if got := string(maskStrings([]byte(in))); got != want {
			t.Errorf("maskStrings(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestStrictUnmarshal: the same answers as the strict Decoder, without its
// copy of the body.
func TestStrictUnmarshal(t *testing.T) {
	for _, tt := range []struct {
		in  string
		err string
	}{
		{`{"value":"a","secret":true}`, ""},
		{`{"value":"a","bogus":1}`, `unknown field "bogus"`},
		{`{"value":1}`, "cannot unmarshal number"},
		{`{"value":"a"} {}`, "trailing"},
		{`{"value":"a"}}`, "invalid character"}, // the old Decoder let this through
		{`{"value":"a\u0000b"}`, ""},
		{`{"value":"` + "\n" + `"}`, "invalid character"},
		{``, "EOF"},
	} {
		var got varBody
		err := strictUnmarshal([]byte(tt.in), &got)
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("strictUnmarshal(%q) = %v, want %q", tt.in, err, tt.err)
		}
	}
}

func FuzzStrictUnmarshal(f *testing.F) {
	f.Add([]byte(`{"value":"a","secret":true}`))
	f.Add([]byte(`{"value":"a\"b","from_secret":"S"}`))
	f.Add([]byte(`{"id":"w","user":"u","project":"p","match":{"uid":1,"token":true},"runtime":{"A":"v"},"execution":{"B":""}}`))
	f.Add([]byte(`{"value":"a"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, mk := range []func() any{func() any { return new(varBody) }, func() any { return new(Registration) }} {
			got, want := mk(), mk()
			err := strictUnmarshal(b, got)
			werr := oldStrict(b, want)
			switch {
			case err == nil && werr != nil:
				t.Fatalf("accepted what the strict Decoder refuses (%v): %q", werr, b)
			case err == nil && !reflect.DeepEqual(plainBody(got), plainBody(want)):
				t.Fatalf("decoded %+v, the Decoder %+v", got, want)
			case err != nil && werr == nil && json.Valid(b) && err != errChangedValue && err != errNotUTF8:
				t.Fatalf("refused (%v) a valid document the Decoder takes: %q", err, b)
			}
		}
	})
}

// plainBody is a decoded body with its locked values as strings, to compare.
func plainBody(v any) any {
	b, ok := v.(*varBody)
	if !ok {
		return v
	}
	var s *string
	if b.Value != nil {
		x := string(b.Value.Bytes())
		s = &x
	}
	return struct {
		Value      *string
		Secret     *bool
		FromSecret string
	}{s, b.Secret, b.FromSecret}
}

func TestWipeString(t *testing.T) {
	heap := string([]byte("heap-value-4f2a"))
	wipeString(heap)
	if heap != strings.Repeat("\x00", 15) {
		t.Fatalf("heap string not wiped: %q", heap)
	}
	const lit = "literal-value"
	wipeString(lit) // in the executable's read-only data: must be left alone (or this faults)
	if lit != "literal-value" {
		t.Fatal("literal wiped")
	}
	one := string([]byte{'z'})
	wipeString(one)
	if one != "z" || string([]byte{'z'}) != "z" {
		t.Fatal("a one-byte string was wiped")
	}
	wipeString(maskText)
	if maskText != "********" {
		t.Fatal("maskText wiped")
	}
}

// TestValueStrings picks values, never names.
func TestValueStrings(t *testing.T) {
	v := "value-1"
	body := struct {
		Name   string            `json:"name"`
		Value  *string           `json:"value"`
		List   []varJSON         `json:"list"`
		RT     map[string]string `json:"runtime"`
		Names  []string          `json:"execution"`
		Issued string            `json:"issued_token"`
	}{"n", &v, []varJSON{{Name: "A", Value: "value-2"}}, map[string]string{"K": "value-3"}, []string{"NAME"}, "tok"}
	got := valueStrings(&body)
	want := []string{"value-1", "value-2", "value-3", "tok"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("valueStrings = %q, want %q", got, want)
	}
}

// TestWriteJSONLocked writes what the indenting Encoder wrote, and clears
// the encoder's buffer.
func TestWriteJSONLocked(t *testing.T) {
	pool := cache.NewPool()
	for _, v := range []any{
		[]varJSON{{Name: "A", Value: "x"}, {Name: "B", Value: strings.Repeat("y", 5000), Secret: true}},
		map[string]any{"error": map[string]string{"code": "X", "message": "m <b>"}},
		[]string{},
	} {
		var want, got bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetIndent("", "  ")
		enc.Encode(v)
		if err := writeJSONLocked(pool, &got, v, false); err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			t.Fatalf("got %q\nwant %q", got.String(), want.String())
		}
	}
	b, err := marshalLocked(pool, map[string]string{"value": "v"})
	if err != nil || string(b.Bytes()) != `{"value":"v"}` {
		t.Fatalf("marshalLocked = %q %v", b.Bytes(), err)
	}
	b.Free()
}

func TestReadBody(t *testing.T) {
	pool := cache.NewPool()
	for _, tt := range []struct {
		n, size, max int
		err          bool
	}{
		{0, 0, 100, false}, {10, 10, 100, false}, {100, 100, 100, false}, {101, 101, 100, true},
		{5000, -1, 1 << 20, false}, {9000, 100, 1 << 20, false}, {200, -1, 100, true},
	} {
		in := bytes.Repeat([]byte("a"), tt.n)
		b, err := readBody(pool, bytes.NewReader(in), int64(tt.size), tt.max)
		if tt.err {
			if !errors.Is(err, errBodyTooLarge) {
				t.Errorf("%+v: err = %v", tt, err)
			}
			continue
		}
		if err != nil || !bytes.Equal(b.Bytes(), in) {
			t.Errorf("%+v: %d bytes, %v", tt, b.Len(), err)
		}
		b.Free()
	}
}
