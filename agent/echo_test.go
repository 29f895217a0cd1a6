package agent

import (
	"bytes"
	"testing"
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
