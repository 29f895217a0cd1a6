package wire

import (
	"bytes"
	"testing"
	"testing/iotest"
)

// seedFrames are valid frames of every type and a few near misses; the same
// frames are committed under testdata/fuzz/FuzzDecode.
func seedFrames() [][]byte {
	return [][]byte{
		AppendRequest(nil, Request{Type: TypeGetEnv}),
		AppendRequest(nil, Request{Type: TypeGetEnv, Token: []byte("tok\x00\xff")}),
		AppendRequest(nil, Request{Type: TypeWatch, Token: []byte("tok")}),
		AppendRequest(nil, Request{Type: TypeGetSecret, Token: []byte("tok"), Name: "DB_PASSWORD"}),
		AppendEnv(nil, 9, []Entry{{Name: "A", Value: []byte("1")}, {Name: "B", Unset: true}, {Name: "C", Value: []byte{}}}),
		AppendSecret(nil, []byte{0, 1, 2, 0xff}),
		AppendChanged(nil, 10),
		AppendError(nil, "WORKLOAD_UNKNOWN", "no registration matches"),
		// Near misses: trailing byte, unset with a value, huge count, bad magic.
		frame(TypeGetEnv, be16(0), []byte{0}),
		frame(TypeEnv, be64(1), be32(1), []byte{1}, str16("A"), bytes32([]byte("x"))),
		frame(TypeEnv, be64(1), be32(MaxEntries), []byte{0}),
		cat([]byte("HTTP/1.1 400 Bad Request\r\n")),
	}
}

// FuzzDecode feeds arbitrary bytes to ReadFrame and every decoder. Nothing
// may panic; reading one byte at a time must agree with reading at once;
// and anything that decodes must encode back to exactly the same bytes,
// which is what makes the format canonical.
func FuzzDecode(f *testing.F) {
	for _, b := range seedFrames() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		typ, p, err := ReadFrame(bytes.NewReader(data), nil)
		typ2, p2, err2 := ReadFrame(iotest.OneByteReader(bytes.NewReader(data)), make([]byte, 0, 32))
		if (err == nil) != (err2 == nil) || typ != typ2 || !bytes.Equal(p, p2) {
			t.Fatalf("ReadFrame disagrees with itself: %v %v / %v %v", typ, err, typ2, err2)
		}
		if err != nil {
			p = data // still run every decoder over the bytes
		} else if got := AppendFrame(nil, typ, p); !bytes.Equal(got, data[:HeaderSize+len(p)]) {
			t.Fatalf("frame does not re-encode: %q, want %q", got, data[:HeaderSize+len(p)])
		}
		checkDecoders(t, p)
	})
}

// checkDecoders runs every decoder over p and checks that what decodes
// encodes back to p.
func checkDecoders(t *testing.T, p []byte) {
	for _, rt := range []Type{TypeGetEnv, TypeGetSecret, TypeWatch} {
		if req, err := DecodeRequest(rt, p); err == nil {
			sameFrame(t, rt, p, AppendRequest(nil, req))
		}
	}
	if rev, entries, err := DecodeEnv(p); err == nil {
		sameFrame(t, TypeEnv, p, AppendEnv(nil, rev, entries))
		if got := EnvSize(entries); got != HeaderSize+len(p) {
			t.Fatalf("EnvSize = %d, frame is %d bytes", got, HeaderSize+len(p))
		}
	}
	if v, err := DecodeSecret(p); err == nil {
		sameFrame(t, TypeSecret, p, AppendSecret(nil, v))
	}
	if rev, err := DecodeChanged(p); err == nil {
		sameFrame(t, TypeChanged, p, AppendChanged(nil, rev))
	}
	if code, msg, err := DecodeError(p); err == nil {
		sameFrame(t, TypeError, p, AppendError(nil, code, msg))
	}
}

func sameFrame(t *testing.T, typ Type, payload, got []byte) {
	t.Helper()
	if want := AppendFrame(nil, typ, payload); !bytes.Equal(got, want) {
		t.Fatalf("%v does not round-trip:\n got %q\nwant %q", typ, got, want)
	}
}
