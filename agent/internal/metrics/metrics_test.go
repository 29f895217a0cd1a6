package metrics

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestCheckListen(t *testing.T) {
	for _, tt := range []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:9464", true},
		{"127.8.9.10:9464", true},
		{"[::1]:9464", true},
		{"localhost:9464", true},
		{"/run/envlet/metrics.sock", true},
		{"0.0.0.0:9464", false},
		{":9464", false},
		{"[::]:9464", false},
		{"192.168.1.5:9464", false},
		{"example.com:9464", false},
		{"127.0.0.1", false},
		{"run/metrics.sock", false},
		{"/" + strings.Repeat("x", 120), false},
	} {
		if err := CheckListen(tt.addr); (err == nil) != tt.ok {
			t.Errorf("CheckListen(%q) = %v, want ok %v", tt.addr, err, tt.ok)
		}
	}
}

func scrapeHandler(t *testing.T, m *Metrics) string {
	t.Helper()
	srv := &http.Server{Handler: m.Handler()}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Close()
	resp, err := http.Get("http://" + l.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// A code that is not an error code's shape never becomes a label (it could
// be a message with a name or a value in it), and a label stops growing at
// maxLabelValues.
func TestLabelsBounded(t *testing.T) {
	m := New(func() State { return State{} })
	m.Refused("workload", "PERMISSION_DENIED")
	m.Refused("workload", "secret value canary-x1")
	m.Refused("workload", "lower_case")
	for i := range 3 * maxLabelValues {
		m.Request("workload", fmt.Sprintf("kind%d", i))
		m.Refused("admin", "CODE_"+strings.Repeat("A", i%40)+string(rune('A'+i%26)))
	}
	text := scrapeHandler(t, m)
	if strings.Contains(text, "canary") || strings.Contains(text, "lower_case") {
		t.Errorf("a non-code became a label:\n%s", text)
	}
	if !strings.Contains(text, `envlet_refusals_total{code="other",socket="workload"} 2`) {
		t.Errorf("non-codes not counted as other:\n%s", text)
	}
	series := 0
	for line := range strings.Lines(text) {
		if strings.HasPrefix(line, "envlet_requests_total{") {
			series++
		}
	}
	if series > maxLabelValues+1 {
		t.Errorf("%d series of envlet_requests_total, want at most %d", series, maxLabelValues+1)
	}
}

// The gauges are the State read at scrape time; the snapshot age only
// exists where there is a snapshot.
func TestStateGauges(t *testing.T) {
	st := State{Revision: 42, Workloads: 3, StaleWorkloads: 1, Backend: "etcd", Connected: false, StaleSeconds: 7,
		HasSnapshot: true, SnapshotAge: 7, MountQueue: 2, AuditQueueBytes: 100, AuditWritten: 9, LockedBytes: 4096}
	m := New(func() State { return st })
	text := scrapeHandler(t, m)
	for _, want := range []string{
		"envlet_store_revision 42\n", "envlet_workloads 3\n", "envlet_workloads_stale 1\n",
		`envlet_backend_connected{backend="etcd"} 0` + "\n", "envlet_backend_stale_seconds 7\n",
		"envlet_snapshot_age_seconds 7\n", "envlet_mount_queue_depth 2\n", "envlet_audit_queue_bytes 100\n",
		"envlet_audit_records_total 9\n", "envlet_locked_bytes 4096\n", "envlet_memory_lock_failed 1\n",
		`envlet_mount_writes_total{result="failed"} 0` + "\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	st = State{Backend: "local", Connected: true, MemoryLocked: true}
	text = scrapeHandler(t, m)
	if strings.Contains(text, "envlet_snapshot_age_seconds ") {
		t.Error("the local store has a snapshot age")
	}
}

// Listen serves on a Unix socket, mode 0660, replacing a stale socket file.
func TestListenUnix(t *testing.T) {
	dir, err := os.MkdirTemp("", "elm")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "m.sock")
	stale, _ := net.Listen("unix", path)
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v %v, want 0660", fi.Mode(), err)
	}
	m := New(func() State { return State{Revision: 5} })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx, l) }()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
	resp, err := hc.Get("http://metrics/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "envlet_store_revision 5") {
		t.Errorf("scrape over the socket:\n%s", b)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if _, err := Listen("10.0.0.1:9464"); err == nil {
		t.Error("Listen took a non-loopback address")
	}
}

// BenchmarkHooks is what one GetEnv adds when metrics are on: a request
// counted and a latency observed.
func BenchmarkHooks(b *testing.B) {
	m := New(func() State { return State{} })
	b.ReportAllocs()
	for b.Loop() {
		m.Request("workload", "get_env")
		m.GetEnvDone(100 * time.Microsecond)
	}
}

// The example alerting rules (packaging/prometheus) name only metrics the
// agent exports.
func TestAlertRulesNameExportedMetrics(t *testing.T) {
	rules, err := os.ReadFile("../../../packaging/prometheus/envlet-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	m := New(func() State { return State{HasSnapshot: true} })
	m.Refused("workload", "X")
	text := scrapeHandler(t, m)
	names := regexp.MustCompile(`envlet_[a-z_]+`).FindAllString(string(rules), -1)
	if len(names) < 4 {
		t.Fatalf("the rules name %d metrics", len(names))
	}
	for _, n := range names {
		if !strings.Contains(text, "\n"+n+" ") && !strings.Contains(text, "\n"+n+"{") {
			t.Errorf("the rules use %s, which the agent does not export", n)
		}
	}
}
