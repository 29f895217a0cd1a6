package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/envlet/envlet/agent/wire"
	"github.com/envlet/envlet/cache"
)

// oddStrings are strings encoding/json escapes in every way it has.
var oddStrings = []string{
	"",
	"plain",
	`quote " and backslash \`,
	"<script>&amp;</script>",
	"ctl \x00\x01\x1f \b\f\n\r\t \x7f",
	"invalid \xff\xfe utf-8 \xc3",
	"separators \u2028 \u2029",
	"emoji 🔑 and é",
	"workload:train-42",
	strings.Repeat("long-", 300),
}

func int64p(n int64) *int64 { return &n }

// TestAuditJSONMatchesMarshal: the hand encoder writes byte for byte what
// json.Marshal writes, for every field and the strings JSON escapes.
func TestAuditJSONMatchesMarshal(t *testing.T) {
	records := []auditRecord{
		{},
		{Time: "2025-01-02T03:04:05.123456789Z", Action: "serve", UID: int64p(0), PID: 1},
		{Action: "refuse", UID: int64p(4294967295), PID: -3, Revision: -1, Lost: 3, Code: "TOO_MANY_CONNECTIONS", Socket: "workload"},
		{Action: "serve", HMACs: map[string]string{}}, // empty map: omitted, as omitempty does
		{Action: "serve", HMACs: map[string]string{"B": "2", "A": "1", "a": "3", "_": "4", "Z<>": "5"}},
	}
	for _, s := range oddStrings {
		records = append(records,
			auditRecord{Time: s, Action: s, User: s, Scope: s, Name: s, Workload: s, WorkloadUser: s, Project: s, Groups: []string{s, "g"}, FromSecret: s, HMAC: s, Code: s, Reason: s, Request: s, Socket: s},
			auditRecord{Action: "serve", HMACs: map[string]string{s: s, s + "x": "y"}},
		)
	}
	for i, r := range records {
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendAuditJSON(nil, &r); !bytes.Equal(got, want) {
			t.Errorf("record %d:\n got %s\nwant %s", i, got, want)
		}
	}
}

// FuzzAuditJSON holds the encoder to json.Marshal on any strings.
func FuzzAuditJSON(f *testing.F) {
	for _, s := range oddStrings {
		f.Add(s, s, s, int64(0))
	}
	f.Add("workload:w", "bob", "NAME", int64(42))
	f.Fuzz(func(t *testing.T, scope, user, name string, n int64) {
		r := auditRecord{Time: scope, Action: user, UID: &n, User: user, PID: int32(n), Scope: scope, Name: name,
			Workload: name, Revision: n, HMACs: map[string]string{name: scope, user: name}, Reason: scope}
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendAuditJSON(nil, &r); !bytes.Equal(got, want) {
			t.Fatalf("\n got %s\nwant %s", got, want)
		}
	})
}

func testAuditLog(t *testing.T, path string) *auditLog {
	t.Helper()
	pool := cache.NewPool()
	l, err := openAudit(path, filepath.Join(t.TempDir(), "audit.key"), pool)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// envFrameOf encodes entries as the Env frame the agent serves.
func envFrameOf(rev uint64, entries []wire.Entry) []byte {
	return wire.AppendEnv(nil, rev, entries)
}

// TestServedJSON: the "hmacs" object of a serve is the map the HMACs of
// the frame's values make, encoded as json.Marshal would; it is kept per
// workload and env revision, and used only for the entries it was made
// from.
func TestServedJSON(t *testing.T) {
	const canary = "c4n4ry-served-value"
	l := testAuditLog(t, filepath.Join(t.TempDir(), "audit.log"))
	entries := []wire.Entry{ // not in order, one unset, odd names
		{Name: "ZED", Value: []byte("z")},
		{Name: "A<&>", Value: []byte(canary)},
		{Name: "GONE", Unset: true},
		{Name: "PATH", Value: []byte("/bin")},
		{Name: "EMPTYISH", Value: []byte(" ")},
	}
	frame := envFrameOf(7, entries)
	got := l.servedJSON("w1", 7, frame)
	want, _ := json.Marshal(l.sums(entries))
	if !bytes.Equal(got, want) {
		t.Fatalf("servedJSON:\n got %s\nwant %s", got, want)
	}
	if bytes.Contains(got, []byte(canary)) {
		t.Fatal("a value in the hmacs object")
	}
	var m map[string]string
	if err := json.Unmarshal(got, &m); err != nil || len(m) != 4 || m["A<&>"] != l.sum([]byte(canary)) || m["GONE"] != "" {
		t.Fatalf("decoded: %v %v", m, err)
	}

	// The same frame at another revision (the header's) is the same
	// entries: the kept object is used.
	if again := l.servedJSON("w1", 7, envFrameOf(9, entries)); &again[0] != &got[0] {
		t.Error("a second serve of the same environment computed the HMACs again")
	}
	// Other entries under the same key (were an env revision reused) are
	// not given the kept object.
	entries[0].Value = []byte("changed")
	other := l.servedJSON("w1", 7, envFrameOf(7, entries))
	want, _ = json.Marshal(l.sums(entries))
	if !bytes.Equal(other, want) {
		t.Fatalf("after a change under the same key:\n got %s\nwant %s", other, want)
	}
	// Nothing set: no object, as omitempty leaves out an empty map.
	if js := l.servedJSON("w2", 1, envFrameOf(1, []wire.Entry{{Name: "X", Unset: true}})); js != nil {
		t.Errorf("no value served, hmacs = %s", js)
	}
	// A line with the kept object decodes to the record json.Marshal
	// writes with the map.
	r := auditRecord{Time: "t", Action: "serve", Workload: "w1", hmacsJSON: other}
	line := appendAuditJSON(nil, &r)
	r.hmacsJSON, r.HMACs = nil, l.sums(entries)
	if want, _ := json.Marshal(r); !bytes.Equal(line, want) {
		t.Errorf("serve line:\n got %s\nwant %s", line, want)
	}
}

// TestServedCacheBound: the kept objects stay within maxServedHMACBytes.
func TestServedCacheBound(t *testing.T) {
	l := testAuditLog(t, filepath.Join(t.TempDir(), "audit.log"))
	entries := make([]wire.Entry, 64)
	for i := range entries {
		entries[i] = wire.Entry{Name: "NAME_" + strconv.Itoa(i), Value: []byte("v")}
	}
	frame := envFrameOf(1, entries)
	one := len(l.servedJSON("w-first", 1, frame))
	n := 3 * maxServedHMACBytes / one
	for i := range n {
		l.servedJSON("w"+strconv.Itoa(i), 1, frame)
	}
	l.served.mu.Lock()
	defer l.served.mu.Unlock()
	if l.served.bytes > maxServedHMACBytes || len(l.served.m) == 0 || len(l.served.m) >= n {
		t.Fatalf("after %d workloads: %d entries, %d bytes (bound %d)", n, len(l.served.m), l.served.bytes, maxServedHMACBytes)
	}
	sum := 0
	for k, e := range l.served.m {
		sum += servedCost(k, e)
	}
	if sum != l.served.bytes {
		t.Fatalf("accounted %d bytes, holds %d", l.served.bytes, sum)
	}
}

// readAuditFile returns the records of an audit log file.
func readAuditFile(t *testing.T, path string) []auditRecord {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []auditRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r auditRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("audit line %d is not JSON: %v: %q", len(out)+1, err, sc.Text())
		}
		out = append(out, r)
	}
	return out
}

// TestAuditQueue: records written from many goroutines all reach the
// file, whole; a record other than serve is in the file when write
// returns; Close writes what is queued.
func TestAuditQueue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l := testAuditLog(t, path)
	const writers, each = 8, 200
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				l.write(auditRecord{Action: "serve", Workload: "w" + strconv.Itoa(g), Revision: int64(i + 1), HMACs: map[string]string{"N": strings.Repeat("ab", 32)}}, &peer{uid: uint32(g), pid: 1}, "user")
			}
		}()
	}
	// A refusal waits for its line: it is in the file when write returns,
	// whatever is queued around it.
	for i := range 20 {
		reason := "refusal " + strconv.Itoa(i)
		l.write(auditRecord{Action: "refuse", Reason: reason}, nil, "")
		b, err := os.ReadFile(path)
		if err != nil || !bytes.Contains(b, []byte(`"reason":"`+reason+`"`)) {
			t.Fatalf("%s not in the file when write returned (%v)", reason, err)
		}
	}
	wg.Wait()
	l.Close()
	recs := readAuditFile(t, path)
	seen := map[string]int{}
	for _, r := range recs {
		seen[r.Action]++
		if r.Action == "serve" && (r.UID == nil || r.User != "user" || r.HMACs["N"] == "" || r.Time == "") {
			t.Fatalf("serve record lost a field: %+v", r)
		}
	}
	if seen["serve"] != writers*each || seen["refuse"] != 20 {
		t.Fatalf("file holds %v, want %d serve and 20 refuse", seen, writers*each)
	}
}

// TestAuditQueueBackPressure: when the log cannot be written (a FIFO
// nobody reads), writers wait for room instead of queueing without bound
// or dropping; once it drains, every record is there.
func TestAuditQueueBackPressure(t *testing.T) {
	old := maxAuditQueue
	maxAuditQueue = 16 << 10
	t.Cleanup(func() { maxAuditQueue = old })

	fifo, opened := auditFIFO(t)
	l := testAuditLog(t, fifo)
	r := <-opened
	defer r.Close()

	// Well over what the pipe (64 KiB) and the queue hold together.
	const n = 400
	line := strings.Repeat("x", 1000)
	done := make(chan struct{})
	go func() {
		for i := range n {
			l.write(auditRecord{Action: "serve", Reason: line, Revision: int64(i + 1)}, nil, "")
		}
		close(done)
	}()
	// Read it all: the writers make progress only as the reader does.
	var got []byte
	buf := make([]byte, 64<<10)
	for lines := 0; lines < n; lines = bytes.Count(got, []byte("\n")) {
		k, err := r.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:k]...)
	}
	<-done
	l.q.mu.Lock()
	peak := l.q.peak
	l.q.mu.Unlock()
	if peak > maxAuditQueue+len(line)+200 {
		t.Errorf("queue held %d bytes; bound %d", peak, maxAuditQueue)
	}
	for i, ln := range bytes.Split(bytes.TrimSuffix(got, []byte("\n")), []byte("\n")) {
		var rec auditRecord
		if err := json.Unmarshal(ln, &rec); err != nil || rec.Revision != int64(i+1) {
			t.Fatalf("line %d: %v %+v", i+1, err, rec.Revision)
		}
	}
}

// BenchmarkServeAuditRecord: the audit cost of one serve of 64 variables,
// as the serve path pays it: the hmacs object (kept, or computed on a
// miss), the record encoded and queued for the writer. "Marshal" is the
// way before: an HMAC per value into a map, json.Marshal.
func BenchmarkServeAuditRecord(b *testing.B) {
	entries := make([]wire.Entry, 64)
	for i := range entries {
		entries[i] = wire.Entry{Name: "BENCH_V" + strconv.Itoa(100+i), Value: bytes.Repeat([]byte{byte('a' + i%26)}, 32)}
	}
	frame := envFrameOf(1, entries)
	uid := int64(200001)
	newLog := func(b *testing.B) *auditLog {
		pool := cache.NewPool()
		l, err := openAudit(os.DevNull, filepath.Join(b.TempDir(), "audit.key"), pool)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { l.Close() })
		return l
	}
	b.Run("Marshal", func(b *testing.B) {
		l := newLog(b)
		b.ReportAllocs()
		for b.Loop() {
			_, es, _ := wire.DecodeEnv(frame[wire.HeaderSize:])
			r := auditRecord{Time: "2025-01-02T03:04:05.123456789Z", Action: "serve", UID: &uid, User: "200001", PID: 4242, Scope: "workload:w00001", Workload: "w00001", Revision: 7, HMACs: l.sums(es), Socket: "workload"}
			json.Marshal(r)
		}
	})
	b.Run("Miss", func(b *testing.B) {
		l := newLog(b)
		b.ReportAllocs()
		rev := int64(0)
		for b.Loop() {
			rev++
			l.write(auditRecord{Action: "serve", Scope: "workload:w00001", Workload: "w00001", Revision: 7, hmacsJSON: l.servedJSON("w00001", rev, frame), Socket: "workload"}, &peer{uid: 200001, pid: 4242}, "200001")
		}
	})
	b.Run("Hit", func(b *testing.B) {
		l := newLog(b)
		b.ReportAllocs()
		for b.Loop() {
			l.write(auditRecord{Action: "serve", Scope: "workload:w00001", Workload: "w00001", Revision: 7, hmacsJSON: l.servedJSON("w00001", 1, frame), Socket: "workload"}, &peer{uid: 200001, pid: 4242}, "200001")
		}
		l.served.mu.Lock()
		for k, e := range l.served.m {
			b.ReportMetric(float64(servedCost(k, e)), "cache-bytes/workload")
		}
		l.served.mu.Unlock()
	})
}

// auditFIFO makes a FIFO to use as the audit log and opens its reading end
// in the background (an open for writing, as openAudit's, waits for it):
// the reader, sent on the channel once open, reads nothing until the test
// does, so the audit writer blocks once the pipe is full.
func auditFIFO(t *testing.T) (string, <-chan *os.File) {
	t.Helper()
	fifo := filepath.Join(t.TempDir(), "audit.log")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	opened := make(chan *os.File, 1)
	go func() {
		f, err := os.Open(fifo)
		if err != nil {
			panic(err)
		}
		opened <- f
	}()
	return fifo, opened
}
