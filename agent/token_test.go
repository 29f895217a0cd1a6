package agent

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envlet/envlet/cache"
)

func tokenAgent(t *testing.T) *Agent {
	t.Helper()
	a := testAgent(t)
	dir, err := os.MkdirTemp("", "eltok")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	a.cfg.TokenDir = filepath.Join(dir, "tokens")
	a.cfg.MountDir = filepath.Join(dir, "mounts")
	return a
}

func fileInfo(t *testing.T, path string) (os.FileMode, uint32, string) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	return fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid, string(b)
}

// TestTokenLifecycle: a file registration gets a token file (0400, owned by
// match.uid), keeps it when the file changes, revokes it when removed; an
// API registration takes its token from its record.
func TestTokenLifecycle(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown token files")
	}
	a := tokenAgent(t)
	a.mu.Lock()
	defer a.mu.Unlock()
	reg := &Registration{ID: "job", User: "u", Project: "p", Match: Match{Token: true, UID: u32(4811)}}
	if err := a.putWorkload(reg, sourceFile); err != nil {
		t.Fatal(err)
	}
	w := a.workloads["job"]
	path := filepath.Join(a.cfg.TokenDir, "job")
	if w.tokenFile != path {
		t.Fatalf("token file %q", w.tokenFile)
	}
	mode, uid, content := fileInfo(t, path)
	if mode != 0o400 || uid != 4811 || content != string(w.token.Bytes())+"\n" || !validToken(w.token.Bytes()) {
		t.Fatalf("token file mode %v uid %d content %q", mode, uid, content)
	}
	if fi, _ := os.Stat(a.cfg.TokenDir); fi.Mode().Perm() != 0o711 {
		t.Fatalf("token dir mode %v", fi.Mode())
	}
	first := content

	// The file registration changes (and the agent restarts): same token.
	reg.Runtime = map[string]string{"X": "1"}
	if err := a.putWorkload(reg, sourceFile); err != nil {
		t.Fatal(err)
	}
	if _, _, c := fileInfo(t, path); c != first || string(a.workloads["job"].token.Bytes())+"\n" != first {
		t.Fatal("a changed file registration got a new token")
	}
	// A token file that is not what the agent wrote is replaced.
	os.Chmod(path, 0o444)
	if err := a.putWorkload(reg, sourceFile); err != nil {
		t.Fatal(err)
	}
	if mode, _, c := fileInfo(t, path); c == first || mode != 0o400 {
		t.Fatal("a world-readable token file was kept")
	}
	// Another owner: a new token, owned by it.
	reg.Match.UID = u32(4812)
	if err := a.putWorkload(reg, sourceFile); err != nil {
		t.Fatal(err)
	}
	if _, uid, _ := fileInfo(t, path); uid != 4812 {
		t.Fatalf("owner %d after the uid changed", uid)
	}
	// No token any more: the file goes.
	reg.Match.Token = false
	if err := a.putWorkload(reg, sourceFile); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) || a.workloads["job"].token != nil {
		t.Fatalf("token kept after token: false: %v", err)
	}
	reg.Match.Token = true
	a.putWorkload(reg, sourceFile)
	a.removeWorkload("job", sourceFile)
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("token file kept after removal: %v", err)
	}

	// A file may not carry an issued token; an API record must.
	reg.IssuedToken = strings.Repeat("a", 64)
	if err := a.putWorkload(reg, sourceFile); err == nil || !strings.Contains(err.Error(), "issued_token") {
		t.Fatalf("file with issued_token: %v", err)
	}
	api := &Registration{ID: "api", User: "u", Project: "p", Match: Match{Token: true}, IssuedToken: strings.Repeat("c", 64)}
	if err := a.putWorkload(api, sourceAPI); err != nil {
		t.Fatal(err)
	}
	if _, uid, c := fileInfo(t, filepath.Join(a.cfg.TokenDir, "api")); uid != 0 || c != api.IssuedToken+"\n" || a.workloads["api"].reg.IssuedToken != "" {
		t.Fatalf("api token file uid %d content %q", uid, c)
	}
	api2 := &Registration{ID: "api2", User: "u", Project: "p", Match: Match{Token: true}}
	if err := a.putWorkload(api2, sourceAPI); err == nil {
		t.Fatal("an API record without its token was accepted")
	}
}

// TestSweepTokens removes token files no registration holds and leaves
// anything the agent did not write.
func TestSweepTokens(t *testing.T) {
	a := tokenAgent(t)
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.putWorkload(&Registration{ID: "kept", User: "u", Project: "p", Match: Match{Token: true}}, sourceFile); err != nil {
		t.Fatal(err)
	}
	d := a.cfg.TokenDir
	writeTokenFile(filepath.Join(d, "stale"), []byte(strings.Repeat("1", 64)), 0, 0)
	os.WriteFile(filepath.Join(d, ".stale.tmp-0011223344556677"), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(d, "other.sock"), []byte("not ours"), 0o644)
	a.sweepTokens()
	for name, want := range map[string]bool{"kept": true, "stale": false, ".stale.tmp-0011223344556677": false, "other.sock": true} {
		if _, err := os.Lstat(filepath.Join(d, name)); (err == nil) != want {
			t.Errorf("%s: present %v, want %v", name, err == nil, want)
		}
	}
}

func TestParseTokenFile(t *testing.T) {
	pool := cache.NewPool()
	good := strings.Repeat("0123456789abcdef", 4)
	for in, ok := range map[string]bool{
		good + "\n":                    true,
		good:                           false,
		good + "\n\n":                  false,
		strings.ToUpper(good) + "\n":   false,
		good[:63] + "g\n":              false,
		"":                             false,
		strings.Repeat("a", 65) + "\n": false,
	} {
		b := parseTokenFile(pool, []byte(in))
		if (b != nil) != ok {
			t.Errorf("parseTokenFile(%q) ok = %v", in, b != nil)
		}
		b.Free()
	}
}

func FuzzTokenFile(f *testing.F) {
	pool := cache.NewPool()
	f.Add([]byte(strings.Repeat("ab", 32) + "\n"))
	f.Add([]byte("short\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tok := parseTokenFile(pool, b)
		if tok != nil && (!validToken(tok.Bytes()) || string(b) != string(tok.Bytes())+"\n") {
			t.Fatalf("accepted %q", b)
		}
		tok.Free()
	})
}

func TestConnLimiter(t *testing.T) {
	a := testAgent(t)
	a.cfg.MaxConns, a.cfg.MaxConnsPerUID = 6, 3
	l := a.limiter("test")
	var held []*slot
	take := func(uid uint32) (*slot, string) {
		s, msg := l.acquire(uid)
		if s != nil {
			held = append(held, s)
		}
		return s, msg
	}
	for i := 0; i < 3; i++ {
		if s, _ := take(1); s == nil {
			t.Fatalf("uid 1 refused its connection %d", i+1)
		}
	}
	if s, msg := take(1); s != nil || !strings.Contains(msg, "max_conns_per_uid") {
		t.Fatalf("4th pending connection of uid 1: %q", msg)
	}
	// Once a request is in, the uid's slot is free again; the total is not.
	held[0].ready()
	if s, _ := take(1); s == nil {
		t.Fatal("uid 1 refused after one of its requests came in")
	}
	if s, _ := take(2); s == nil {
		t.Fatal("uid 2 refused under the caps")
	}
	if s, _ := take(2); s == nil {
		t.Fatal("uid 2 refused under the caps")
	}
	if s, msg := take(3); s != nil || !strings.Contains(msg, "max_conns)") {
		t.Fatalf("7th connection overall: %q", msg)
	}
	held[1].release()
	held[1].release() // idempotent
	if s, _ := take(3); s == nil {
		t.Fatal("a released slot was not reusable")
	}
	total, by := l.held()
	if total != 6 || by[1] != 2 || by[2] != 2 || by[3] != 1 {
		t.Fatalf("held %d %v", total, by)
	}
	if r := l.refused[1]; r == nil || r.count != 0 || r.last.IsZero() {
		t.Fatalf("refusal of uid 1 not reported: %+v", r)
	}
	for _, s := range held {
		s.release()
	}
	if total, by := l.held(); total != 0 || len(by) != 0 {
		t.Fatalf("after release: %d %v", total, by)
	}
}

// TestAuditBudget: a uid's refusals are recorded one by one up to the
// burst, then counted, and the count goes into the next record.
func TestAuditBudget(t *testing.T) {
	a := testAgent(t)
	l := a.limiter("test")
	for i := 0; i < auditBurst; i++ {
		if ok, _ := l.auditBudget(7); !ok {
			t.Fatalf("refusal %d of the burst not recorded", i+1)
		}
	}
	for i := 0; i < 10; i++ {
		if ok, _ := l.auditBudget(7); ok {
			t.Fatal("over the burst, a refusal was recorded")
		}
	}
	if ok, _ := l.auditBudget(8); !ok {
		t.Fatal("another uid shares the budget")
	}
	l.buckets[7].last = l.buckets[7].last.Add(-time.Second) // a second passes
	ok, skipped := l.auditBudget(7)
	if !ok || skipped != 10 {
		t.Fatalf("after a second: %v, %d skipped", ok, skipped)
	}
}
