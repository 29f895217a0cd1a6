package agent

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/envlet/envlet/cache"
)

// TestClearEchoes: a body is zeroed where it lies in the reads of the
// server's buffer, whole or split across reads, and nothing else is.
func TestClearEchoes(t *testing.T) {
	body := []byte(`{"value":"canary-echo-0123456789"}`)
	head := []byte("PUT /v1/x HTTP/1.1\r\nContent-Length: 34\r\n\r\n")
	next := []byte("GET /v1/status HTTP/1.1\r\n\r\n")
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for _, tt := range []struct {
		name  string
		reads [][]byte
	}{
		{"whole", [][]byte{cat(head, body, next)}},
		{"split", [][]byte{cat(head, body[:10]), cat(body[10:], next)}},
		{"split three", [][]byte{cat(head, body[:5]), cat(body[5:20]), cat(body[20:], next)}},
		{"rest unread", [][]byte{cat(head, body[:20])}}, // the rest went straight to locked memory
	} {
		clearEchoes(tt.reads, body)
		all := bytes.Join(tt.reads, nil)
		if bytes.Contains(all, []byte("canary")) || bytes.Contains(all, body[:16]) {
			t.Errorf("%s: the body is left in %q", tt.name, all)
		}
		if !bytes.HasPrefix(all, head) {
			t.Errorf("%s: the headers were touched: %q", tt.name, all)
		}
		if tt.name != "rest unread" && !bytes.HasSuffix(all, next) {
			t.Errorf("%s: the next request was touched: %q", tt.name, all)
		}
	}
	// A short suffix that only happens to begin the body stays.
	reads := [][]byte{cat(head, []byte(`{"v`))}
	clearEchoes(reads, body)
	if !bytes.HasSuffix(reads[0], []byte(`{"v`)) {
		t.Errorf("a 3-byte chance match was cleared: %q", reads[0])
	}
}

func TestPadValueReply(t *testing.T) {
	b := make([]byte, replyBufSize+1)
	copy(b, "{}\n")
	if n := padValueReply(b, 3); n != replyBufSize+1 || string(b[:3]) != "{}\n" || len(bytes.Trim(b[3:n], "\n")) != 0 {
		t.Fatalf("padded to %d: %q", n, b[:8])
	}
}

// TestValueReply: a reply with values, spliced in after encoding, reads
// back as encoding/json's own, and the encoder saw no value.
func TestValueReply(t *testing.T) {
	pool := cache.NewPool()
	tricky := "a\"b\\c\nd\re\tf\x01<g>&h \u2028 \U0001F600 envlet-value-x"
	s := tricky
	for _, v := range []any{
		varJSON{Name: "A", Value: tricky},
		[]varJSON{{Name: "A", Value: "x"}, {Name: "B", Value: strings.Repeat("y", 5000), Secret: true}},
		secretJSON{Name: "S", Kind: "text", Value: &s},
		groupJSON{Name: "g", Projects: []string{"p"}, Variables: []varJSON{{Name: "V", Value: tricky}}},
		[]explainJSON{{Name: "E", Value: tricky, Layer: "project", Overrides: []string{}}},
		varJSON{Name: "BAD", Value: "x\xffy"},
	} {
		want, _ := json.Marshal(v)
		var got bytes.Buffer
		if err := writeJSONLocked(pool, &got, v, true); err != nil {
			t.Fatal(err)
		}
		if got.Len() <= replyBufSize {
			t.Errorf("a value reply of %d bytes is not padded past %d", got.Len(), replyBufSize)
		}
		var g, w any
		if err := json.Unmarshal(got.Bytes(), &g); err != nil {
			t.Fatalf("%T: %v in %q", v, err, got.Bytes())
		}
		json.Unmarshal(want, &w)
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%T:\n got %v\nwant %v", v, g, w)
		}
	}
}
