package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// freeLoopbackAddr is a 127.0.0.1 address no one listens on now: the
// kernel picks the port; the listener is closed for the server to take.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// metricsBackend is the backend label the agents of this run report.
func metricsBackend() string {
	if e2eBackend == "etcd" {
		return "etcd"
	}
	return "local"
}

// scrape reads the agent's /metrics once.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("scrape: %s\n%s", resp.Status, b)
	}
	return string(b)
}

// metricsAgent starts an agent with metrics_listen on a free loopback port,
// a project, a workload for a uid with no passwd entry, a token workload,
// and planted canary values; it returns the agent, the metrics address,
// the workload's uid and the canaries (values and the issued token).
func metricsAgent(t *testing.T) (*agentProc, string, uint32, []string) {
	t.Helper()
	addr := freeLoopbackAddr(t)
	a := startAgentConf(t, "metrics_listen = "+addr, "")
	uid := freeUID(t)
	a.cli("project", "create", "fraud")
	a.cli("project", "add-member", "fraud", strconv.Itoa(int(uid)))
	a.register(map[string]any{"id": "w", "user": strconv.Itoa(int(uid)), "project": "fraud", "match": map[string]any{"uid": uid}})
	a.register(map[string]any{"id": "tok", "user": strconv.Itoa(int(uid)), "project": "fraud", "match": map[string]any{"token": true}})
	canaries := []string{"canary-metric-acct-4c1d", "canary-metric-proj-8e02", "canary-metric-secret-17aa"}
	if r := a.cliAs(uid, "env", "set", "API_TOKEN", canaries[0]); r.code != 0 {
		t.Fatal(r)
	}
	a.cli("project", "env", "set", "fraud", "DB_PASSWORD", canaries[1])
	if r := a.cliAs(uid, "secret", "create", "S", canaries[2]); r.code != 0 {
		t.Fatal(r)
	}
	// The token the agent issued is a secret too.
	var ws []struct {
		ID        string `json:"id"`
		TokenFile string `json:"token_file"`
	}
	json.Unmarshal([]byte(a.cli("workload", "list", "--json")), &ws)
	for _, w := range ws {
		if w.TokenFile != "" {
			b, err := os.ReadFile(w.TokenFile)
			if err != nil || len(strings.TrimSpace(string(b))) < 16 {
				t.Fatalf("token file %s: %q %v", w.TokenFile, b, err)
			}
			canaries = append(canaries, strings.TrimSpace(string(b)))
		}
	}
	if len(canaries) != 4 {
		t.Fatalf("no token issued: %+v", ws)
	}
	return a, addr, uid, canaries
}

// The metrics count what the agent did, and carry no value, token or name.
func TestMetricsNoValues(t *testing.T) {
	a, addr, uid, canaries := metricsAgent(t)
	for range 3 {
		env, r := a.launchEnv(uid, uid)
		if r.code != 0 || env["API_TOKEN"] != canaries[0] {
			t.Fatalf("launch: %s", r)
		}
	}
	if r := a.runAs(uid, uid, "", nil, bins.exec, "--get-secret", "S"); r.code != 0 {
		t.Fatal(r)
	}
	stranger := freeUID(t)
	if r := a.runAs(stranger, stranger, "", nil, bins.exec, "--", "true"); r.code == 0 {
		t.Fatal("an unregistered uid was served")
	}
	if r := a.cliAs(stranger, "project", "env", "list", "fraud", "--reveal"); r.code == 0 {
		t.Fatal("a stranger read a project")
	}
	text := scrape(t, addr)
	for _, c := range canaries {
		if strings.Contains(text, c) {
			t.Errorf("the metrics hold the value or token %q", c)
		}
	}
	// No label names a workload, a user, a project or a variable.
	for _, name := range []string{`"w"`, `"tok"`, `"fraud"`, "API_TOKEN", "DB_PASSWORD", strconv.Itoa(int(uid))} {
		for line := range strings.Lines(text) {
			if strings.Contains(line, "{") && strings.Contains(line, name) {
				t.Errorf("a label carries %s: %s", name, line)
			}
		}
	}
	for _, want := range []string{
		`envlet_requests_total{socket="workload",type="get_env"} 4`, // 3 served, the stranger's refused
		`envlet_requests_total{socket="workload",type="get_secret"} 1`,
		`envlet_refusals_total{code="WORKLOAD_UNKNOWN",socket="workload"} 1`,
		`envlet_refusals_total{code="PERMISSION_DENIED",socket="admin"} 1`,
		`envlet_getenv_duration_seconds_count 4`,
		`envlet_workloads 2`,
		`envlet_backend_connected{backend="` + metricsBackend() + `"} 1`,
		`envlet_memory_lock_failed 0`,
		"process_resident_memory_bytes ",
		"go_goroutines ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if metricsBackend() == "etcd" {
		// Every read and commit went to etcd, and the agent keeps a snapshot.
		if strings.Contains(text, "envlet_etcd_request_duration_seconds_count 0\n") ||
			!strings.Contains(text, "envlet_snapshot_age_seconds ") {
			t.Error("on etcd: no etcd request observed, or no snapshot age")
		}
	}
	if t.Failed() {
		t.Log(text)
	}
	a.noCanary(canaries...)
}

// metrics_listen refuses an address off loopback, at start.
func TestMetricsListenLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:9464", ":9464", "10.1.2.3:9464", "example.com:9464", "relative/path.sock"} {
		dir := t.TempDir()
		conf := filepath.Join(dir, "envletd.conf")
		os.WriteFile(conf, []byte("state_dir = "+dir+"\nmetrics_listen = "+addr+"\n"), 0o644)
		out, err := exec.Command(bins.envletd, "-config", conf).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "metrics_listen") {
			t.Errorf("metrics_listen = %s: %v\n%s", addr, err, out)
		}
	}
}

// Debian's Prometheus scrapes a running agent, and a metric comes back
// through Prometheus's own query API.
func TestPrometheusScrapesAgent(t *testing.T) {
	prom, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("prometheus not found; CI must install it (apt-get install prometheus)")
		}
		t.Skip("prometheus not found (apt-get install prometheus)")
	}
	a, addr, uid, canaries := metricsAgent(t)
	for range 2 {
		if _, r := a.launchEnv(uid, uid); r.code != 0 {
			t.Fatal(r)
		}
	}

	dir := t.TempDir()
	conf := filepath.Join(dir, "prometheus.yml")
	os.WriteFile(conf, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: envlet
    static_configs:
      - targets: ["%s"]
`, addr)), 0o644)
	web := freeLoopbackAddr(t)
	cmd := exec.Command(prom, "--config.file="+conf, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+web)
	logs := newLogBuf()
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })

	// query asks Prometheus for an instant vector: each series' labels and
	// value.
	query := func(q string) ([]map[string]string, []string) {
		resp, err := http.Get("http://" + web + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return nil, nil // not up yet
		}
		defer resp.Body.Close()
		var r struct {
			Status string `json:"status"`
			Data   struct {
				Result []struct {
					Metric map[string]string `json:"metric"`
					Value  [2]any            `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if json.NewDecoder(resp.Body).Decode(&r) != nil || r.Status != "success" {
			return nil, nil
		}
		var labels []map[string]string
		var values []string
		for _, s := range r.Data.Result {
			v, _ := s.Value[1].(string)
			labels, values = append(labels, s.Metric), append(values, v)
		}
		return labels, values
	}
	// until polls Prometheus until q has a series with value want: the
	// scrape is an event in Prometheus, visible only through its API.
	until := func(q, want string) map[string]string {
		deadline := time.Now().Add(90 * time.Second)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			labels, values := query(q)
			for i, v := range values {
				if v == want {
					return labels[i]
				}
			}
			select {
			case <-exited:
				t.Fatalf("prometheus exited:\n%s", logs.String())
			case <-tick.C:
			}
			if time.Now().After(deadline) {
				t.Fatalf("prometheus never had %s = %s (last %v %v); its log:\n%s", q, want, labels, values, logs.String())
			}
		}
	}
	until(`up{job="envlet"}`, "1")
	got := until(`envlet_requests_total{job="envlet",socket="workload",type="get_env"}`, "2")
	if got["instance"] != addr {
		t.Errorf("series from %q, want the agent at %s", got["instance"], addr)
	}
	until(`envlet_workloads{job="envlet"}`, "2")
	until(`envlet_backend_connected{job="envlet",backend="`+metricsBackend()+`"}`, "1")
	// Nothing Prometheus stored holds a value either.
	labels, _ := query(`{job="envlet"}`)
	b, _ := json.Marshal(labels)
	for _, c := range canaries {
		if strings.Contains(string(b), c) {
			t.Errorf("prometheus stored %q", c)
		}
	}
}
