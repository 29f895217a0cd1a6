package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

// headerOnly is a reader that serves a 12-byte header and fails the test if
// anyone reads past it: ReadRequest must decide from the header alone.
type headerOnly struct {
	t   *testing.T
	hdr []byte
}

func (h *headerOnly) Read(p []byte) (int, error) {
	if len(h.hdr) == 0 {
		h.t.Errorf("ReadRequest read past the header")
		return 0, io.EOF
	}
	n := copy(p, h.hdr)
	h.hdr = h.hdr[n:]
	return n, nil
}

func reqHeader(magic string, typ Type, n uint32) []byte {
	h := append([]byte(magic), Version, byte(typ), 0, 0, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(h[8:], n)
	return h
}

func TestReadRequestRefusesFromHeader(t *testing.T) {
	for _, tc := range []struct {
		name string
		hdr  []byte
		want error
	}{
		{"Env 16 MiB", reqHeader(Magic, TypeEnv, MaxPayload), ErrType},
		{"Secret 1 MiB", reqHeader(Magic, TypeSecret, 4+MaxValue), ErrType},
		{"Error", reqHeader(Magic, TypeError, 100), ErrType},
		{"unknown type", reqHeader(Magic, 0x42, 10), ErrType},
		{"GetSecret over limit", reqHeader(Magic, TypeGetSecret, 2+MaxToken+2+MaxName+1), ErrTooLarge},
		{"GetEnv over limit", reqHeader(Magic, TypeGetEnv, 2+MaxToken+1), ErrTooLarge},
		{"bad magic", reqHeader("GET ", TypeGetEnv, 4), ErrBadMagic},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ReadRequest(&headerOnly{t: t, hdr: tc.hdr}, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("ReadRequest = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestReadRequestAccepts(t *testing.T) {
	for _, req := range []Request{
		{Type: TypeGetEnv, Token: []byte("tok")},
		{Type: TypeWatch, Token: bytes.Repeat([]byte{'t'}, MaxToken)},
		{Type: TypeGetSecret, Token: bytes.Repeat([]byte{'t'}, MaxToken), Name: strings.Repeat("N", MaxName)},
	} {
		b := AppendRequest(nil, req)
		typ, p, err := ReadRequest(bytes.NewReader(b), make([]byte, 0, 2048))
		if err != nil || typ != req.Type {
			t.Fatalf("ReadRequest(%v) = %v, %v", req.Type, typ, err)
		}
		got, err := DecodeRequest(typ, p)
		if err != nil || got.Name != req.Name || !bytes.Equal(got.Token, req.Token) {
			t.Fatalf("DecodeRequest = %+v, %v", got, err)
		}
	}
	if _, _, err := ReadRequest(bytes.NewReader(nil), nil); err != io.EOF {
		t.Fatalf("ReadRequest of nothing = %v, want io.EOF", err)
	}
}

// TestBadMagicNoEcho: the peer's bytes never reach the error text, which
// goes to logs and the audit log.
func TestBadMagicNoEcho(t *testing.T) {
	b := reqHeader("s3cr", TypeGetEnv, 0)
	for _, read := range []func() error{
		func() error { _, _, err := ReadFrame(bytes.NewReader(b), nil); return err },
		func() error { _, _, err := ReadRequest(bytes.NewReader(b), nil); return err },
	} {
		err := read()
		if !errors.Is(err, ErrBadMagic) || strings.Contains(err.Error(), "s3cr") {
			t.Fatalf("error = %v; want bad magic without the bytes", err)
		}
	}
}

// FuzzReadRequest: ReadRequest agrees with ReadFrame on every request it
// accepts, and accepts nothing but requests.
func FuzzReadRequest(f *testing.F) {
	f.Add(AppendRequest(nil, Request{Type: TypeGetEnv, Token: []byte("t")}))
	f.Add(AppendRequest(nil, Request{Type: TypeGetSecret, Token: []byte("t"), Name: "N"}))
	f.Add(reqHeader(Magic, TypeEnv, 10))
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		typ, p, err := ReadRequest(bytes.NewReader(data), nil)
		if err != nil {
			return
		}
		if !isRequest(typ) || len(p) > 2+MaxToken+2+MaxName {
			t.Fatalf("ReadRequest accepted %v of %d bytes", typ, len(p))
		}
		typ2, p2, err2 := ReadFrame(bytes.NewReader(data), nil)
		if err2 != nil || typ2 != typ || !bytes.Equal(p, p2) {
			t.Fatalf("ReadFrame disagrees: %v %v", typ2, err2)
		}
	})
}
