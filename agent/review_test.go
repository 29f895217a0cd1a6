package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"github.com/envlet/envlet/cache"
)

// TestAdminRefusalAuditBudget: a flood of PERMISSION_DENIED from one uid on
// the admin socket is audited up to the per-uid budget, and the next record
// says how many were not recorded one by one.
func TestAdminRefusalAuditBudget(t *testing.T) {
	a := apiAgent(t)
	h := a.adminHandler()
	const uid, n = 4242, 500
	c := &caller{peer: peer{uid: uid}, user: "mallory"}
	for i := 0; i < n; i++ {
		if w := call(h, c, "POST", "/v1/groups", []byte(`{"name":"g"}`)); !strings.Contains(w.Body.String(), CodeDenied) {
			t.Fatalf("refusal %d = %d %s, want %s", i, w.Code, w.Body, CodeDenied)
		}
	}
	refusals := func() []string {
		b, err := os.ReadFile(a.cfg.AuditLog)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, `"action":"refuse"`) && strings.Contains(l, `"socket":"admin"`) {
				out = append(out, l)
			}
		}
		return out
	}
	got := refusals()
	if len(got) < 1 || len(got) > auditBurst+auditRate*5 {
		t.Fatalf("%d refusals wrote %d audit records, want at most about %d", n, len(got), auditBurst)
	}
	// A second later the budget has room again: the next record carries
	// the count of those skipped.
	l := a.limiter("admin")
	l.mu.Lock()
	l.buckets[uid].last = l.buckets[uid].last.Add(-time.Second)
	l.mu.Unlock()
	call(h, c, "POST", "/v1/groups", []byte(`{"name":"g"}`))
	after := refusals()
	if len(after) != len(got)+1 {
		t.Fatalf("after a pause: %d records, want %d", len(after), len(got)+1)
	}
	if last := after[len(after)-1]; !strings.Contains(last, "earlier refusals of this uid not recorded one by one") {
		t.Fatalf("the record after the flood has no count: %s", last)
	}
}

// stallReader is a body that declares much and sends nothing: on its first
// Read it records what the pool holds, then ends.
type stallReader struct {
	pool *cache.Pool
	seen int64
}

func (s *stallReader) Read(p []byte) (int, error) {
	s.seen = s.pool.Stats().InUseBytes
	return 0, io.ErrUnexpectedEOF
}

// TestReadBodyGrowsAsBytesArrive: a declared Content-Length of 1 MiB costs
// no locked memory before bytes arrive, and the bodies in flight together
// stay under maxBodyInFlight.
func TestReadBodyGrowsAsBytesArrive(t *testing.T) {
	pool := cache.NewPool()
	s := &stallReader{pool: pool}
	if _, err := readBody(pool, s, maxBodyBytes, maxBodyBytes); err == nil {
		t.Fatal("readBody of a stalled body succeeded")
	}
	if s.seen == 0 || s.seen > 8<<10 {
		t.Fatalf("before any byte arrived readBody held %d bytes of locked memory, want at most 8 KiB", s.seen)
	}
	if n := bodyInFlight.Load(); n != 0 {
		t.Fatalf("after the read %d bytes still count in flight", n)
	}

	// Bodies still arrive whole, of every size up to the limit.
	for _, n := range []int{0, 1, 4095, 4096, 4097, 100000, maxBodyBytes} {
		body := bytes.Repeat([]byte{'v'}, n)
		buf, err := readBody(pool, iotest.HalfReader(bytes.NewReader(body)), int64(n), maxBodyBytes)
		if err != nil || !bytes.Equal(buf.Bytes(), body) {
			t.Fatalf("readBody of %d bytes: %v", n, err)
		}
		buf.Free()
	}
	if _, err := readBody(pool, bytes.NewReader(make([]byte, maxBodyBytes+1)), -1, maxBodyBytes); !errors.Is(err, errBodyTooLarge) {
		t.Fatalf("readBody over the limit = %v", err)
	}

	// Over the global cap: BUSY, and nothing leaks from the count.
	others := int64(maxBodyInFlight - 6000) // other bodies, stalled
	bodyInFlight.Add(others)
	_, err := readBody(pool, bytes.NewReader(make([]byte, 10000)), -1, maxBodyBytes)
	bodyInFlight.Add(-others)
	if !errors.Is(err, errBodyBusy) {
		t.Fatalf("readBody over the in-flight cap = %v, want errBodyBusy", err)
	}
	if n := bodyInFlight.Load(); n != 0 {
		t.Fatalf("%d bytes left counted in flight", n)
	}
	if httpStatus(CodeBusy) != 503 {
		t.Fatalf("BUSY maps to %d", httpStatus(CodeBusy))
	}
}

// TestWorkloadsDirFIFO: a FIFO (or a symlink) named *.json in workloads.d
// is refused without hanging the agent; the regular files beside it load.
func TestWorkloadsDirFIFO(t *testing.T) {
	a := apiAgent(t)
	dir := a.cfg.WorkloadsDir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo.json"), 0o644); err != nil {
		t.Fatal(err)
	}
	reg := `{"id":"w1","user":"u","project":"p","match":{"uid":4242}}`
	if err := os.WriteFile(filepath.Join(dir, "w1.json"), []byte(reg), 0o644); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "elsewhere.json")
	os.WriteFile(other, []byte(`{"id":"w2","user":"u","project":"p","match":{"uid":4243}}`), 0o644)
	if err := os.Symlink(other, filepath.Join(dir, "link.json")); err != nil {
		t.Fatal(err)
	}
	d, err := a.watchWorkloadsDir() // rescans once, synchronously: hung here before
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	a.mu.RLock()
	_, w1 := a.workloads["w1"]
	_, w2 := a.workloads["w2"]
	a.mu.RUnlock()
	if !w1 || w2 {
		t.Fatalf("registered w1 %v (want true), w2 through a symlink %v (want false)", w1, w2)
	}
}

// TestUserNameCache: a found name is cached for nameTTL, a failed lookup
// not at all.
func TestUserNameCache(t *testing.T) {
	a := testAgent(t)
	names, calls := fakeUsers(t)

	if got := a.userName(5001); got != "5001" {
		t.Fatalf("unknown uid = %q", got)
	}
	names["5001"] = "newuser" // created after the first lookup
	if got := a.userName(5001); got != "newuser" {
		t.Fatalf("after the user was created: %q, want newuser (a failure must not be cached)", got)
	}
	before := *calls
	names["5001"] = "renamed"
	if got := a.userName(5001); got != "newuser" || *calls != before {
		t.Fatalf("within the TTL: %q after %d lookups, want the cached name without a lookup", got, *calls-before)
	}
	// Age the entry past the TTL.
	a.names.Store(uint32(5001), cachedName{"newuser", time.Now().Add(-nameTTL - time.Second)})
	if got := a.userName(5001); got != "renamed" {
		t.Fatalf("after the TTL: %q, want renamed", got)
	}
}

// TestNoExistenceOracle: to a non-admin, a missing project or workload is
// refused exactly as one they may not see; admins get the precise code.
func TestNoExistenceOracle(t *testing.T) {
	a := apiAgent(t)
	h := a.adminHandler()
	root := &caller{peer: peer{uid: 0}, user: "root", admin: true}
	mallory := &caller{peer: peer{uid: 4242}, user: "mallory"}
	if w := call(h, root, "POST", "/v1/projects", []byte(`{"name":"secretproj"}`)); w.Code != 201 {
		t.Fatalf("create project: %d %s", w.Code, w.Body)
	}
	code := func(body string) string {
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		json.Unmarshal([]byte(body), &e)
		return e.Error.Code
	}
	for _, tc := range []struct {
		c          *caller
		method     string
		path, want string
	}{
		{mallory, "GET", "/v1/projects/secretproj", CodeDenied},
		{mallory, "GET", "/v1/projects/nosuchproj", CodeDenied},
		{mallory, "GET", "/v1/projects/nosuchproj/env", CodeDenied},
		{mallory, "GET", "/v1/projects/nosuchproj/secrets", CodeDenied},
		{mallory, "GET", "/v1/explain?workload=nosuchwl", CodeDenied},
		{root, "GET", "/v1/projects/nosuchproj", CodeProjectNotFound},
		{root, "GET", "/v1/explain?workload=nosuchwl", CodeWorkloadNotFound},
	} {
		w := call(h, tc.c, tc.method, tc.path, nil)
		if got := code(w.Body.String()); got != tc.want {
			t.Errorf("%s %s as %s = %d %s, want %s", tc.method, tc.path, tc.c.user, w.Code, w.Body, tc.want)
		}
	}
	// The two refusals of mallory's GET read alike but for the name.
	a1 := call(h, mallory, "GET", "/v1/projects/secretproj", nil).Body.String()
	a2 := call(h, mallory, "GET", "/v1/projects/nosuchproj", nil).Body.String()
	if strings.ReplaceAll(a1, "secretproj", "X") != strings.ReplaceAll(a2, "nosuchproj", "X") {
		t.Errorf("refusals differ:\n%s\n%s", a1, a2)
	}
}

// fakeUsers replaces the passwd lookup for the test: uids in the returned
// map have that user name, others have no entry; *calls counts lookups.
func fakeUsers(t *testing.T) (map[string]string, *int) {
	t.Helper()
	names := map[string]string{}
	calls := new(int)
	lookupUID = func(id string) (*user.User, error) {
		*calls++
		if n, ok := names[id]; ok {
			return &user.User{Username: n, Uid: id}, nil
		}
		return nil, user.UnknownUserIdError(0)
	}
	t.Cleanup(func() { lookupUID = user.LookupId })
	return names, calls
}
