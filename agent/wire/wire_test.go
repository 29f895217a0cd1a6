package wire

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

// Helpers that build frames by hand, byte by byte, so the tests check the
// format of the package doc and not only that encoder and decoder agree.

func be16(n int) []byte { return []byte{byte(n >> 8), byte(n)} }
func be32(n int) []byte { return []byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)} }
func be64(n uint64) []byte {
	return []byte{byte(n >> 56), byte(n >> 48), byte(n >> 40), byte(n >> 32),
		byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func str16(s string) []byte { return cat(be16(len(s)), []byte(s)) }

func bytes32(b []byte) []byte { return cat(be32(len(b)), b) }

// header builds a frame header declaring n payload bytes.
func header(t Type, n int) []byte { return cat([]byte("ENVL\x01"), []byte{byte(t), 0, 0}, be32(n)) }

// frame builds a whole frame whose header declares the payload's length.
func frame(t Type, payload ...[]byte) []byte {
	p := cat(payload...)
	return cat(header(t, len(p)), p)
}

// decodeFrame reads one frame and decodes it with the decoder of its type,
// as a peer would.
func decodeFrame(b []byte) error {
	t, p, err := ReadFrame(bytes.NewReader(b), nil)
	if err != nil {
		return err
	}
	switch t {
	case TypeGetEnv, TypeGetSecret, TypeWatch:
		_, err = DecodeRequest(t, p)
	case TypeEnv:
		_, _, err = DecodeEnv(p)
	case TypeSecret:
		_, err = DecodeSecret(p)
	case TypeChanged:
		_, err = DecodeChanged(p)
	case TypeError:
		_, _, err = DecodeError(p)
	}
	return err
}

func TestHeaderLayout(t *testing.T) {
	got := AppendFrame(nil, TypeSecret, []byte{0xAA, 0xBB})
	want := []byte{'E', 'N', 'V', 'L', 1, 0x82, 0, 0, 0, 0, 0, 2, 0xAA, 0xBB}
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendFrame = % x, want % x", got, want)
	}
}

func TestRequestRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		name string
		req  Request
		want []byte // the frame, by hand
	}{
		{"GetEnvNoToken", Request{Type: TypeGetEnv}, frame(TypeGetEnv, be16(0))},
		{"GetEnvToken", Request{Type: TypeGetEnv, Token: []byte("t0k")}, frame(TypeGetEnv, str16("t0k"))},
		{"GetEnvMaxToken", Request{Type: TypeGetEnv, Token: bytes.Repeat([]byte{0xFF}, MaxToken)},
			frame(TypeGetEnv, be16(MaxToken), bytes.Repeat([]byte{0xFF}, MaxToken))},
		{"Watch", Request{Type: TypeWatch, Token: []byte("w")}, frame(TypeWatch, str16("w"))},
		{"GetSecret", Request{Type: TypeGetSecret, Token: []byte("t"), Name: "DB_PASSWORD"},
			frame(TypeGetSecret, str16("t"), str16("DB_PASSWORD"))},
		{"GetSecretMaxName", Request{Type: TypeGetSecret, Name: strings.Repeat("N", MaxName)},
			frame(TypeGetSecret, be16(0), str16(strings.Repeat("N", MaxName)))},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := AppendRequest(nil, tt.req)
			if !bytes.Equal(b, tt.want) {
				t.Fatalf("AppendRequest = %q, want %q", b, tt.want)
			}
			typ, p, err := ReadFrame(bytes.NewReader(b), nil)
			if err != nil {
				t.Fatalf("ReadFrame: %v", err)
			}
			got, err := DecodeRequest(typ, p)
			if err != nil {
				t.Fatalf("DecodeRequest: %v", err)
			}
			if got.Type != tt.req.Type || !bytes.Equal(got.Token, tt.req.Token) || got.Name != tt.req.Name {
				t.Fatalf("DecodeRequest = %+v, want %+v", got, tt.req)
			}
		})
	}
}

func TestEnvRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte{'v'}, MaxValue)
	for _, tt := range []struct {
		name    string
		rev     uint64
		entries []Entry
	}{
		{"Empty", 0, nil},
		{"SetAndUnset", 42, []Entry{
			{Name: "A", Value: []byte("1")},
			{Name: "GONE", Unset: true},
			{Name: "EMPTY", Value: []byte{}},
			{Name: "A", Value: []byte("2")},
			{Name: "BIN", Value: []byte{0x01, 0xFF, '=', '\n'}},
		}},
		{"Limits", 1<<64 - 1, []Entry{
			{Name: strings.Repeat("N", MaxName), Value: big},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := AppendEnv(nil, tt.rev, tt.entries)
			if len(b) != EnvSize(tt.entries) {
				t.Fatalf("len(AppendEnv) = %d, EnvSize = %d", len(b), EnvSize(tt.entries))
			}
			typ, p, err := ReadFrame(bytes.NewReader(b), nil)
			if err != nil || typ != TypeEnv {
				t.Fatalf("ReadFrame = %v, %v", typ, err)
			}
			rev, got, err := DecodeEnv(p)
			if err != nil {
				t.Fatalf("DecodeEnv: %v", err)
			}
			if rev != tt.rev || len(got) != len(tt.entries) {
				t.Fatalf("DecodeEnv = rev %d, %d entries; want rev %d, %d entries", rev, len(got), tt.rev, len(tt.entries))
			}
			for i, e := range got {
				w := tt.entries[i]
				if e.Name != w.Name || e.Unset != w.Unset || !bytes.Equal(e.Value, w.Value) {
					t.Errorf("entry %d = %q %q %v, want %q %q %v", i, e.Name, e.Value, e.Unset, w.Name, w.Value, w.Unset)
				}
			}
		})
	}
}

func TestEnvLayout(t *testing.T) {
	// An unset entry is written with an empty value, whatever Value holds.
	got := AppendEnv(nil, 7, []Entry{{Name: "A", Value: []byte("x")}, {Name: "B", Value: []byte("ignored"), Unset: true}})
	want := frame(TypeEnv, be64(7), be32(2),
		[]byte{0}, str16("A"), bytes32([]byte("x")),
		[]byte{1}, str16("B"), be32(0))
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendEnv = %q, want %q", got, want)
	}
}

// The agent builds Env frames in locked memory it sized with EnvSize; no
// byte of a value may land in a copy the garbage collector owns.
func TestAppendEnvInPlace(t *testing.T) {
	entries := []Entry{{Name: "A", Value: []byte("1")}, {Name: "B", Unset: true}}
	buf := make([]byte, 0, EnvSize(entries))
	allocs := testing.AllocsPerRun(10, func() {
		out := AppendEnv(buf, 1, entries)
		if len(out) != cap(buf) || &out[0] != &buf[:1][0] {
			t.Fatal("AppendEnv did not write into buf")
		}
	})
	if allocs != 0 {
		t.Fatalf("AppendEnv into a buffer of EnvSize allocated %v times", allocs)
	}
}

func TestSecretChangedErrorRoundTrip(t *testing.T) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	for _, value := range [][]byte{{}, all, bytes.Repeat([]byte{0}, MaxValue)} {
		b := AppendSecret(nil, value)
		if want := frame(TypeSecret, bytes32(value)); !bytes.Equal(b, want) {
			t.Fatalf("AppendSecret(%d bytes) differs from the hand-built frame", len(value))
		}
		_, p, err := ReadFrame(bytes.NewReader(b), nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeSecret(p)
		if err != nil || !bytes.Equal(got, value) {
			t.Fatalf("DecodeSecret(%d bytes) = %d bytes, %v", len(value), len(got), err)
		}
	}

	for _, rev := range []uint64{0, 1, 1<<64 - 1} {
		b := AppendChanged(nil, rev)
		if want := frame(TypeChanged, be64(rev)); !bytes.Equal(b, want) {
			t.Fatalf("AppendChanged(%d) = %x, want %x", rev, b, want)
		}
		got, err := DecodeChanged(b[HeaderSize:])
		if err != nil || got != rev {
			t.Fatalf("DecodeChanged = %d, %v; want %d", got, err, rev)
		}
	}

	b := AppendError(nil, "WORKLOAD_UNKNOWN", "no registration matches uid 1001")
	if want := frame(TypeError, str16("WORKLOAD_UNKNOWN"), str16("no registration matches uid 1001")); !bytes.Equal(b, want) {
		t.Fatalf("AppendError = %q, want %q", b, want)
	}
	code, msg, err := DecodeError(b[HeaderSize:])
	if err != nil || code != "WORKLOAD_UNKNOWN" || msg != "no registration matches uid 1001" {
		t.Fatalf("DecodeError = %q, %q, %v", code, msg, err)
	}

	// AppendError cuts rather than panics: it is the path that reports failures.
	long := strings.Repeat("m", 70000)
	code, msg, err = DecodeError(AppendError(nil, long, long)[HeaderSize:])
	if err != nil || len(code) != 0xFFFF || len(msg) != 0xFFFF {
		t.Fatalf("DecodeError of a cut frame = %d, %d bytes, %v", len(code), len(msg), err)
	}
}

func TestReject(t *testing.T) {
	okEntry := cat([]byte{0}, str16("A"), bytes32([]byte("1")))
	for _, tt := range []struct {
		name  string
		frame []byte
		want  error
	}{
		// Header.
		{"BadMagic", cat([]byte("HTTP/1.1 200"), be16(0)), ErrBadMagic},
		{"Version0", cat([]byte("ENVL\x00\x01\x00\x00"), be32(2), be16(0)), ErrVersion},
		{"Version2", cat([]byte("ENVL\x02\x01\x00\x00"), be32(2), be16(0)), ErrVersion},
		{"Type0", cat([]byte("ENVL\x01\x00\x00\x00"), be32(0)), ErrType},
		{"Type4", cat([]byte("ENVL\x01\x04\x00\x00"), be32(0)), ErrType},
		{"Type80", cat([]byte("ENVL\x01\x80\x00\x00"), be32(0)), ErrType},
		{"Reserved6", cat([]byte("ENVL\x01\x01\x01\x00"), be32(2), be16(0)), ErrReserved},
		{"Reserved7", cat([]byte("ENVL\x01\x01\x00\x80"), be32(2), be16(0)), ErrReserved},
		// Per-type payload bounds, refused from the header alone.
		{"GetEnvOverBound", header(TypeGetEnv, 2+MaxToken+1), ErrTooLarge},
		{"WatchOverBound", header(TypeWatch, 2+MaxToken+1), ErrTooLarge},
		{"GetSecretOverBound", header(TypeGetSecret, 2+MaxToken+2+MaxName+1), ErrTooLarge},
		{"EnvOverMaxPayload", header(TypeEnv, MaxPayload+1), ErrTooLarge},
		{"EnvLength4GiB", header(TypeEnv, -1), ErrTooLarge},
		{"SecretOverBound", header(TypeSecret, 4+MaxValue+1), ErrTooLarge},
		{"ChangedOverBound", header(TypeChanged, 9), ErrTooLarge},
		{"ErrorOverBound", header(TypeError, 4+2*0xFFFF+1), ErrTooLarge},
		// Short streams.
		{"ShortHeader", []byte("ENVL\x01"), io.ErrUnexpectedEOF},
		{"ShortPayload", cat(header(TypeGetEnv, 5), be16(3), []byte("a")), io.ErrUnexpectedEOF},
		{"ShortLargePayload", cat(header(TypeEnv, 200<<10), make([]byte, 100<<10)), io.ErrUnexpectedEOF},
		// Requests.
		{"TokenTruncated", frame(TypeGetEnv, be16(5), []byte("abc")), ErrTruncated},
		{"TokenLengthTruncated", frame(TypeGetEnv, []byte{0}), ErrTruncated},
		{"TokenTooLarge", frame(TypeGetSecret, be16(MaxToken+1), make([]byte, MaxToken+1), str16("N")), ErrTooLarge},
		{"GetEnvTrailing", frame(TypeGetEnv, be16(0), []byte("x")), ErrTrailing},
		{"WatchEmptyPayload", frame(TypeWatch), ErrTruncated},
		{"SecretNameMissing", frame(TypeGetSecret, be16(0)), ErrTruncated},
		{"SecretNameEmpty", frame(TypeGetSecret, be16(0), be16(0)), ErrInvalid},
		{"SecretNameEquals", frame(TypeGetSecret, be16(0), str16("A=B")), ErrInvalid},
		{"SecretNameNUL", frame(TypeGetSecret, be16(0), str16("A\x00")), ErrInvalid},
		{"SecretNameTooLarge", frame(TypeGetSecret, be16(0), str16(strings.Repeat("N", MaxName+1))), ErrTooLarge},
		{"GetSecretTrailing", frame(TypeGetSecret, be16(0), str16("N"), []byte{0}), ErrTrailing},
		// Env.
		{"EnvEmptyPayload", frame(TypeEnv), ErrTruncated},
		{"EnvNoCount", frame(TypeEnv, be64(1)), ErrTruncated},
		{"EnvCountOverMax", frame(TypeEnv, be64(1), be32(MaxEntries+1)), ErrTooLarge},
		{"EnvCountOverPayload", frame(TypeEnv, be64(1), be32(2), okEntry), ErrTruncated},
		{"EnvCountHuge", frame(TypeEnv, be64(1), be32(MaxEntries), okEntry), ErrTruncated},
		{"EnvFlags", frame(TypeEnv, be64(1), be32(1), []byte{2}, str16("A"), bytes32(nil)), ErrInvalid},
		{"EnvNameEmpty", frame(TypeEnv, be64(1), be32(1), []byte{0}, be16(0), bytes32(nil)), ErrInvalid},
		{"EnvNameEquals", frame(TypeEnv, be64(1), be32(1), []byte{0}, str16("A=B"), bytes32(nil)), ErrInvalid},
		{"EnvNameNUL", frame(TypeEnv, be64(1), be32(1), []byte{0}, str16("\x00"), bytes32(nil)), ErrInvalid},
		{"EnvNameTooLarge", frame(TypeEnv, be64(1), be32(1), []byte{0}, str16(strings.Repeat("N", MaxName+1)), bytes32(nil)), ErrTooLarge},
		{"EnvNameTruncated", frame(TypeEnv, be64(1), be32(1), []byte{0}, be16(10), []byte("ABCD"), be32(0)), ErrTruncated},
		{"EnvValueNUL", frame(TypeEnv, be64(1), be32(1), []byte{0}, str16("A"), bytes32([]byte("a\x00b"))), ErrInvalid},
		{"EnvValueTooLarge", frame(TypeEnv, be64(1), be32(1), []byte{0}, str16("A"), be32(MaxValue+1), make([]byte, MaxValue+1)), ErrTooLarge},
		{"EnvValueTruncated", frame(TypeEnv, be64(1), be32(1), []byte{0}, str16("A"), be32(10), []byte("abc")), ErrTruncated},
		{"EnvUnsetWithValue", frame(TypeEnv, be64(1), be32(1), []byte{1}, str16("A"), bytes32([]byte("x"))), ErrInvalid},
		{"EnvTrailing", frame(TypeEnv, be64(1), be32(1), okEntry, []byte{0}), ErrTrailing},
		// Secret, Changed, Error.
		{"SecretEmptyPayload", frame(TypeSecret), ErrTruncated},
		{"SecretTruncated", frame(TypeSecret, be32(5), []byte("abcd")), ErrTruncated},
		{"SecretTooLarge", frame(TypeSecret, be32(MaxValue+1)), ErrTooLarge},
		{"SecretTrailing", frame(TypeSecret, bytes32([]byte("s")), []byte{0}), ErrTrailing},
		{"ChangedShort", frame(TypeChanged, be32(1)), ErrTruncated},
		{"ErrorCodeEmpty", frame(TypeError, be16(0), str16("m")), ErrInvalid},
		{"ErrorNoMessage", frame(TypeError, str16("C")), ErrTruncated},
		{"ErrorTrailing", frame(TypeError, str16("C"), str16("m"), []byte{0}), ErrTrailing},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := decodeFrame(tt.frame)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want an error wrapping %v", err, tt.want)
			}
		})
	}
}

func TestDecodeRequestOfReply(t *testing.T) {
	if _, err := DecodeRequest(TypeEnv, be16(0)); !errors.Is(err, ErrType) {
		t.Fatalf("DecodeRequest(TypeEnv) = %v, want ErrType", err)
	}
}

// Errors name the frame and field that failed, never what they held.
func TestErrorsHoldNoValue(t *testing.T) {
	const canary = "c4n4ry-s3cr3t"
	for _, b := range [][]byte{
		frame(TypeEnv, be64(1), be32(1), []byte{0}, str16("A"), bytes32([]byte(canary+"\x00"))),
		frame(TypeEnv, be64(1), be32(1), []byte{0}, str16(canary+"="), bytes32([]byte(canary))),
		frame(TypeEnv, be64(1), be32(2), []byte{0}, str16("A"), bytes32([]byte(canary))),
		frame(TypeEnv, be64(1), be32(1), []byte{1}, str16("A"), bytes32([]byte(canary))),
		frame(TypeGetSecret, str16(canary), str16(canary+"=")),
		frame(TypeSecret, bytes32([]byte(canary)), []byte(canary)),
	} {
		err := decodeFrame(b)
		if err == nil {
			t.Fatalf("decodeFrame(%q) = nil, want an error", b)
		}
		if strings.Contains(err.Error(), canary) {
			t.Errorf("error %q holds a value", err)
		}
	}
}

func TestErrorText(t *testing.T) {
	err := decodeFrame(frame(TypeEnv, be64(1), be32(2), []byte{0}, str16("A"), bytes32(nil), []byte{4}, str16("B"), bytes32(nil)))
	if want := "decode Env: entry 1 flags: invalid (unknown bits 0x4)"; err == nil || err.Error() != want {
		t.Fatalf("error = %v, want %q", err, want)
	}
	err = decodeFrame(header(TypeGetEnv, 5000))
	if want := "read frame: GetEnv payload: too large (5000 bytes declared, limit 1026)"; err == nil || err.Error() != want {
		t.Fatalf("error = %v, want %q", err, want)
	}
}

func TestReadFrameStream(t *testing.T) {
	var stream []byte
	stream = AppendRequest(stream, Request{Type: TypeGetEnv, Token: []byte("tok")})
	stream = AppendEnv(stream, 3, []Entry{{Name: "A", Value: []byte("1")}})
	stream = AppendChanged(stream, 4)

	// One byte per Read: ReadFrame must retry short reads.
	r := iotest.OneByteReader(bytes.NewReader(stream))
	for _, want := range []Type{TypeGetEnv, TypeEnv, TypeChanged} {
		typ, _, err := ReadFrame(r, nil)
		if err != nil || typ != want {
			t.Fatalf("ReadFrame = %v, %v; want %v", typ, err, want)
		}
	}
	if _, _, err := ReadFrame(r, nil); err != io.EOF {
		t.Fatalf("ReadFrame at the end = %v, want io.EOF itself", err)
	}

	// An error from the reader comes back wrapped.
	boom := errors.New("boom")
	_, _, err := ReadFrame(iotest.ErrReader(boom), nil)
	if !errors.Is(err, boom) {
		t.Fatalf("ReadFrame = %v, want it to wrap %v", err, boom)
	}
}

func TestReadFrameUsesBuf(t *testing.T) {
	b := AppendSecret(nil, []byte("secret"))
	buf := make([]byte, 0, 64)
	r := bytes.NewReader(b)
	allocs := testing.AllocsPerRun(100, func() {
		r.Reset(b)
		_, p, err := ReadFrame(r, buf)
		if err != nil || &p[0] != &buf[:1][0] {
			t.Fatalf("payload does not alias buf (err %v)", err)
		}
	})
	if allocs != 0 {
		t.Fatalf("ReadFrame into a large enough buf allocated %v times, want 0", allocs)
	}
}

// A peer that declares a 16 MiB Env and sends a few bytes must not make the
// reader set 16 MiB aside. This measures bytes allocated, not time.
func TestReadFrameLargeDeclaredLength(t *testing.T) {
	b := cat(header(TypeEnv, MaxPayload), make([]byte, 100))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err := ReadFrame(bytes.NewReader(b), nil)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("ReadFrame = %v, want io.ErrUnexpectedEOF", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Fatalf("ReadFrame allocated %d bytes for 100 bytes received", got)
	}

	// And a large frame that does arrive is read whole.
	value := bytes.Repeat([]byte("x"), MaxValue)
	entries := make([]Entry, 10)
	for i := range entries {
		entries[i] = Entry{Name: "V", Value: value}
	}
	full := AppendEnv(nil, 1, entries)
	_, p, err := ReadFrame(iotest.HalfReader(bytes.NewReader(full)), nil)
	if err != nil || !bytes.Equal(p, full[HeaderSize:]) {
		t.Fatalf("ReadFrame of a %d-byte frame: %v", len(full), err)
	}
}

func TestAppendPanics(t *testing.T) {
	for _, tt := range []struct {
		name string
		f    func()
	}{
		{"RequestOfReplyType", func() { AppendRequest(nil, Request{Type: TypeEnv}) }},
		{"TokenOverU16", func() { AppendRequest(nil, Request{Type: TypeGetEnv, Token: make([]byte, 1<<16)}) }},
		{"NameOverU16", func() { AppendEnv(nil, 0, []Entry{{Name: strings.Repeat("N", 1<<16)}}) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			tt.f()
		})
	}
}

func TestTypeString(t *testing.T) {
	if s := TypeGetSecret.String(); s != "GetSecret" {
		t.Errorf("TypeGetSecret = %q", s)
	}
	if s := Type(0x42).String(); s != "type 0x42" {
		t.Errorf("Type(0x42) = %q", s)
	}
}
