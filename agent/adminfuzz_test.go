package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/envlet/envlet/fetch"
)

// apiAgent is an agent with a real local store (on tmpfs when there is
// one), following its own commits, without sockets: enough to drive
// adminHandler directly.
func apiAgent(tb testing.TB) *Agent {
	tb.Helper()
	a, closeAgent := newAPIAgent(tb)
	tb.Cleanup(closeAgent)
	return a
}

func newAPIAgent(tb testing.TB) (*Agent, func()) {
	tb.Helper()
	base := ""
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		base = "/dev/shm"
	}
	dir, err := os.MkdirTemp(base, "elfz")
	if err != nil {
		tb.Fatal(err)
	}
	cfg := baseConfig()
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.KeyFile = filepath.Join(dir, "keyring")
	cfg.TokenDir = filepath.Join(dir, "tokens")
	cfg.MountDir = filepath.Join(dir, "mounts")
	cfg.WorkloadsDir = filepath.Join(dir, "workloads.d")
	cfg.AuditLog = filepath.Join(dir, "audit.log")
	cfg.Defaults = []Default{{"PATH", "/bin"}}
	a := New(cfg, hclog.NewNullLogger())
	keys, err := fetch.LoadKeyring(cfg.KeyFile, true)
	if err != nil {
		tb.Fatal(err)
	}
	a.keys = keys
	be, err := fetch.OpenLocal(cfg.StateDir, keys)
	if err != nil {
		tb.Fatal(err)
	}
	a.backend = be
	if a.audit, err = openAudit(cfg.AuditLog, filepath.Join(dir, "audit.key"), a.pool); err != nil {
		tb.Fatal(err)
	}
	a.setPlatform()
	snap, err := be.Snapshot(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	a.mu.Lock()
	a.applySnapshot(snap)
	a.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.follow(ctx, snap.Rev); close(done) }()
	return a, func() {
		cancel()
		<-done
		be.Close()
		a.audit.Close()
		a.mu.Lock()
		a.model.free()
		for _, w := range a.workloads {
			w.free()
		}
		a.mu.Unlock()
		os.RemoveAll(dir)
	}
}

// call drives the real admin handler with a caller in the context. target
// is the request target as a client sends it (escaped); one that does not
// parse is taken as a raw path.
func call(h http.Handler, c *caller, method, target string, body []byte) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "http://envlet/", bytes.NewReader(body))
	u, err := url.ParseRequestURI(target)
	if err != nil {
		u = &url.URL{Path: target}
	}
	r.URL, r.RequestURI = u, target
	r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, c))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// knownCodes: every code an admin reply may carry.
var knownCodes = map[string]bool{
	CodeInvalidName: true, CodeReservedName: true, CodeInvalidValue: true, CodeLimitExceeded: true,
	CodeAlreadyExists: true, CodeNotFound: true, CodeSecretTooLarge: true, CodeDenied: true,
	CodeInvalidRequest: true, CodeProjectNotFound: true, CodeProjectExists: true, CodeWorkloadNotFound: true,
	CodeWorkloadExists: true, CodeGroupNotFound: true, CodeGroupExists: true, CodeNotFoundGeneric: true,
	CodeUnavailable: true, CodeUnsupported: true, CodeBusy: true,
}

// fuzzCanary sits in seed bodies where values go. It holds characters no
// name or id may have, so no message has a reason to echo it.
const fuzzCanary = "canary VALUE!9z"

var fuzzMethods = []string{"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}

// FuzzAdminAPI drives the admin API's real handler with arbitrary methods,
// paths and bodies, as an admin or as a plain user: no panic, every error
// carries a known code with its HTTP status and a JSON body, no error
// quotes a value, and a refused request leaves the store as it was.
func FuzzAdminAPI(f *testing.F) {
	reg := func(match string) []byte {
		return []byte(`{"id":"w1","user":"alice","project":"p","match":` + match + `,"runtime":{"RT":"` + fuzzCanary + `"},"execution":{"EX":"` + fuzzCanary + `"}}`)
	}
	v := []byte(`{"value":"` + fuzzCanary + `","secret":true}`)
	for _, s := range []struct {
		m    int
		path string
		body []byte
	}{
		{0, "/v1/whoami", nil}, {0, "/v1/status", nil},
		{1, "/v1/projects", []byte(`{"name":"p"}`)}, {1, "/v1/projects/p/members", []byte(`{"user":"alice","owner":true}`)},
		{2, "/v1/users/alice/env/DB_PASSWORD", v}, {1, "/v1/users/me/env/X", v}, {3, "/v1/users/me/env/X", v},
		{2, "/v1/users/me/env/Y", []byte(`{"from_secret":"S"}`)}, {4, "/v1/users/me/env/X", nil}, {4, "/v1/users/me/env", nil},
		{0, "/v1/users/alice/env?reveal=1", nil}, {0, "/v1/users/alice/env/X", nil},
		{2, "/v1/projects/p/env/PV", v}, {4, "/v1/projects/p/env/PV", nil}, {0, "/v1/projects/p/env", nil},
		{2, "/v1/projects/p/groups", []byte(`{"groups":["g"]}`)},
		{1, "/v1/groups", []byte(`{"name":"g"}`)}, {2, "/v1/groups/g/env/GV", v}, {1, "/v1/groups/g/assign", []byte(`{"projects":["p"]}`)},
		{1, "/v1/groups/g/unassign", []byte(`{"projects":["p"]}`)}, {4, "/v1/groups/g", nil},
		{1, "/v1/users/me/secrets/S", []byte(`{"value":"` + fuzzCanary + `"}`)}, {2, "/v1/projects/p/secrets/F", []byte(`{"value":"aGk=","file":true}`)},
		{1, "/v1/audit/hmac", []byte(`{"value":"` + fuzzCanary + `"}`)},
		{1, "/v1/workloads", reg(`{"uid":1001}`)}, {1, "/v1/workloads", reg(`{"token":true,"systemd_unit":"x.service"}`)},
		{1, "/v1/workloads", reg(`{"container_id":"7eb263389e5e","cgroup":"/docker"}`)}, {4, "/v1/workloads/w1", nil},
		{0, "/v1/explain?workload=w1&reveal=1", nil}, {0, "/v1/explain?user=alice&project=p", nil},
		{4, "/v1/projects/p/members/alice", nil}, {4, "/v1/projects/p", nil},
		// Bad input the matrix also sends over the socket.
		{2, "/v1/users/me/env/X", []byte(`{"value":1}`)}, {2, "/v1/users/me/env/X", []byte(`{"value":"a","bogus":1}`)},
		{2, "/v1/users/me/env/X", []byte(`{"value":"a\u0000b"}`)}, {2, "/v1/users/me/env/X", []byte("{\"value\":\"\xff\xfe\"}")},
		{2, "/v1/users/me/env/../../etc", v}, {4, "/v1/workloads/..%2f..", nil}, {1, "/v1/workloads", []byte(`{"id":"../x"}`)},
		{2, "/v1/projects/p/groups", []byte(`{"groups":[` + strings.Repeat(`"g",`, 100) + `"g"]}`)},
		{2, "/v1/users/me/env/X", []byte(`[` + strings.Repeat(`[`, 5000))},
	} {
		f.Add(uint8(s.m), s.path, s.body, true)
		f.Add(uint8(s.m), s.path, s.body, false)
	}
	a, closeAgent := newAPIAgent(f)
	defer func() { closeAgent() }()
	h := a.adminHandler()
	admin := &caller{peer: peer{uid: 0}, user: "root", admin: true}
	alice := &caller{peer: peer{uid: 1001, gid: 1001}, user: "alice"}
	var calls int
	f.Fuzz(func(t *testing.T, m uint8, path string, body []byte, isAdmin bool) {
		if len(path) > 4096 || len(body) > maxBodyBytes+16 {
			return
		}
		if calls++; calls%500 == 0 {
			// Keep the store small, so each commit stays quick.
			closeAgent()
			a, closeAgent = newAPIAgent(t)
			h = a.adminHandler()
		}
		c := alice
		if isAdmin {
			c = admin
		}
		method := fuzzMethods[int(m)%len(fuzzMethods)]
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		before, err := a.backend.Snapshot(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		w := call(h, c, method, path, body)
		if w.Code < 400 {
			return
		}
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if method != "HEAD" {
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error.Code == "" {
				t.Fatalf("%s %q: status %d without an error body: %q", method, path, w.Code, w.Body.String())
			}
			if !knownCodes[e.Error.Code] {
				t.Fatalf("%s %q: code %q (status %d): %s", method, path, e.Error.Code, w.Code, e.Error.Message)
			}
			if httpStatus(e.Error.Code) != w.Code {
				t.Fatalf("%s %q: code %s with status %d", method, path, e.Error.Code, w.Code)
			}
			if strings.Contains(e.Error.Message, fuzzCanary) && !strings.Contains(path, fuzzCanary) {
				t.Fatalf("%s %q: the error quotes a value: %s", method, path, e.Error.Message)
			}
		}
		after, err := a.backend.Snapshot(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if after.Rev != before.Rev || len(after.KVs) != len(before.KVs) {
			t.Fatalf("%s %q failed with %d but changed the store (rev %d -> %d)", method, path, w.Code, before.Rev, after.Rev)
		}
	})
}

// TestAdminBadInput is the bad-input matrix at the handler: each request
// gets its code, and the store does not move.
func TestAdminBadInput(t *testing.T) {
	a := apiAgent(t)
	h := a.adminHandler()
	admin := &caller{peer: peer{uid: 0}, user: "root", admin: true}
	if w := call(h, admin, "POST", "/v1/projects", []byte(`{"name":"p"}`)); w.Code != 201 {
		t.Fatal(w.Body.String())
	}
	for _, tt := range []struct {
		name, method, path string
		body               []byte
		code               string
	}{
		{"Oversized", "PUT", "/v1/users/me/env/X", []byte(`{"value":"` + strings.Repeat("a", maxBodyBytes) + `"}`), CodeInvalidRequest},
		{"InvalidJSON", "PUT", "/v1/users/me/env/X", []byte(`{"value":`), CodeInvalidRequest},
		{"NotAnObject", "PUT", "/v1/users/me/env/X", []byte(`"x"`), CodeInvalidRequest},
		{"Trailing", "PUT", "/v1/users/me/env/X", []byte(`{"value":"a"}{}`), CodeInvalidRequest},
		{"UnknownField", "PUT", "/v1/users/me/env/X", []byte(`{"value":"a","valeu":"b"}`), CodeInvalidRequest},
		{"WrongType", "PUT", "/v1/users/me/env/X", []byte(`{"value":42}`), CodeInvalidRequest},
		{"WrongTypeSecret", "PUT", "/v1/users/me/env/X", []byte(`{"value":"a","secret":"yes"}`), CodeInvalidRequest},
		{"NulInValue", "PUT", "/v1/users/me/env/X", []byte(`{"value":"a\u0000b"}`), CodeInvalidValue},
		{"NulInName", "PUT", "/v1/users/me/env/X%00Y", []byte(`{"value":"a"}`), CodeInvalidName},
		{"InvalidUTF8Name", "PUT", "/v1/users/me/env/%FF%FE", []byte(`{"value":"a"}`), CodeInvalidName},
		{"InvalidUTF8User", "PUT", "/v1/users/%FF/env/X", []byte(`{"value":"a"}`), CodeInvalidRequest},
		{"InvalidUTF8Project", "POST", "/v1/projects", []byte("{\"name\":\"\xff\"}"), CodeInvalidRequest},
		{"TraversalUser", "PUT", "/v1/users/..%2F..%2Fetc/env/X", []byte(`{"value":"a"}`), CodeInvalidRequest},
		{"TraversalWorkload", "POST", "/v1/workloads", []byte(`{"id":"../../etc/passwd","user":"u","project":"p","match":{"uid":1}}`), CodeInvalidRequest},
		{"TraversalWorkloadDelete", "DELETE", "/v1/workloads/..%2F..%2Fetc", nil, CodeWorkloadNotFound},
		{"HugeCount", "PUT", "/v1/projects/p/groups", []byte(`{"groups":[` + strings.Repeat(`"g",`, 200000) + `"g"]}`), CodeInvalidRequest},
		{"HugeRuntime", "POST", "/v1/workloads", hugeRegistration(), CodeInvalidRequest},
		{"DeepNesting", "PUT", "/v1/users/me/env/X", []byte(strings.Repeat(`[`, 100000)), CodeInvalidRequest},
		{"IssuedToken", "POST", "/v1/workloads", []byte(`{"id":"w","user":"u","project":"p","match":{"token":true},"issued_token":"` + strings.Repeat("a", 64) + `"}`), CodeInvalidRequest},
		{"BadContainerID", "POST", "/v1/workloads", []byte(`{"id":"w","user":"u","project":"p","match":{"container_id":"xyz"}}`), CodeInvalidRequest},
		{"BadUnit", "POST", "/v1/workloads", []byte(`{"id":"w","user":"u","project":"p","match":{"systemd_unit":"a/b.service"}}`), CodeInvalidRequest},
		{"UIDOutOfRange", "POST", "/v1/workloads", []byte(`{"id":"w","user":"u","project":"p","match":{"uid":4294967296}}`), CodeInvalidRequest},
		{"NegativeUID", "POST", "/v1/workloads", []byte(`{"id":"w","user":"u","project":"p","match":{"uid":-1}}`), CodeInvalidRequest},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := a.backend.Snapshot(context.Background())
			w := call(h, admin, tt.method, tt.path, tt.body)
			var e struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			json.Unmarshal(w.Body.Bytes(), &e)
			if e.Error.Code != tt.code || w.Code != httpStatus(tt.code) {
				t.Fatalf("status %d code %q (%s), want %s", w.Code, e.Error.Code, e.Error.Message, tt.code)
			}
			if len(e.Error.Message) > 1024 {
				t.Fatalf("message of %d bytes", len(e.Error.Message))
			}
			after, _ := a.backend.Snapshot(context.Background())
			if after.Rev != before.Rev {
				t.Fatal("the store moved")
			}
		})
	}
}

func hugeRegistration() []byte {
	var b bytes.Buffer
	b.WriteString(`{"id":"w","user":"u","project":"p","match":{"uid":1},"runtime":{`)
	for i := 0; b.Len() < maxBodyBytes+10; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"V` + strings.Repeat("x", 10) + string(rune('a'+i%26)) + `":"v"`)
	}
	b.WriteString(`}}`)
	return b.Bytes()
}
