package main

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/envlet/envlet/bench/internal/gen"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	for _, tt := range []struct {
		name    string
		samples []time.Duration
		p       float64
		want    time.Duration
	}{
		{"Empty", nil, 50, 0},
		{"One", ms(7), 99, 7 * time.Millisecond},
		{"MedianOdd", ms(1, 2, 3, 4, 5), 50, 3 * time.Millisecond},
		{"MedianEven", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"P99Of100", ms(seq(1, 100)...), 99, 99 * time.Millisecond},
		{"P100", ms(1, 2, 3), 100, 3 * time.Millisecond},
		{"P0", ms(1, 2, 3), 0, 1 * time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.samples, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.samples, tt.p, got, tt.want)
			}
		})
	}
}

func seq(a, b int) []int {
	var out []int
	for i := a; i <= b; i++ {
		out = append(out, i)
	}
	return out
}

func TestThousands(t *testing.T) {
	for in, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 640000: "640,000", 12345678: "12,345,678"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%d) = %q, want %q", in, got, want)
		}
	}
}

const perfSample = `# To display the perf.data header info, please use --header/--header-only options.
#
# Samples: 5K of event 'cpu-clock:ppp'
# Event count (approx.): 5930924000
#
# Children      Self  Symbol
# ........  ........  ..............................................................
#
    87.91%     0.00%  [.] runtime.goexit.abi0
    81.92%     0.00%  [.] github.com/envlet/envlet/agent.(*Agent).serveWorkload
    76.23%     0.15%  [.] github.com/envlet/envlet/agent.(*Agent).sendEnv
    69.06%    56.14%  [.] github.com/envlet/envlet/agent.(*Agent).match
    12.26%    12.20%  [k] finish_task_switch.isra.0
     5.11%     0.02%  [.] github.com/envlet/envlet/agent.(*Agent).serveWorkloads
     1.20%     1.20%  [.] github.com/envlet/envlet/agent.(*auditLog).write
`

func TestParsePerf(t *testing.T) {
	p := parsePerf(perfSample)
	if p.samples != 5000 {
		t.Errorf("samples = %d, want 5000", p.samples)
	}
	var names []string
	for _, f := range p.funcs {
		names = append(names, f.name)
	}
	want := []string{"agent.(*Agent).serveWorkload", "agent.(*Agent).sendEnv", "agent.(*Agent).match", "agent.(*auditLog).write"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("funcs = %v, want %v (wrappers such as serveWorkloads left out)", names, want)
	}
	if got := p.share("(*Agent).match"); got != 69.06 {
		t.Errorf("share(match) = %v, want 69.06", got)
	}
	if p.self[0].name != "agent.(*Agent).match" || p.self[0].selfPct != 56.14 {
		t.Errorf("hottest self symbol = %+v, want match at 56.14%%", p.self[0])
	}
	c := cause(p, "fallback")
	if !strings.Contains(c, "69% of the agent's CPU samples are under `Agent.match`") || !strings.Contains(c, "Suggested fix: index registrations by uid") {
		t.Errorf("cause = %q, want the match hot spot and its fix", c)
	}
	if c := cause(parsePerf(""), "fallback"); c != "fallback" {
		t.Errorf("cause of an empty profile = %q, want the fallback", c)
	}
	if c := cause(nil, "fallback"); !strings.HasPrefix(c, "fallback") {
		t.Errorf("cause without a profile = %q, want the fallback first", c)
	}
}

// buildTools builds the floor server and the bare launcher once per test.
func buildTools(t *testing.T) (floor, bare string) {
	t.Helper()
	dir := t.TempDir()
	for _, pkg := range []string{"floorserver", "barelauncher"} {
		cmd := exec.Command("go", "build", "-o", dir, "../"+pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, b)
		}
	}
	return filepath.Join(dir, "floorserver"), filepath.Join(dir, "barelauncher")
}

// startFloorServer runs the floor server on a socket in a short temp dir and
// waits for its "ready".
func startFloorServer(t *testing.T, floor string, vars string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "el")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "f.sock")
	cmd := exec.Command(floor, "-socket", sock, "-vars", vars)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("floor server said %q, %v; want ready", line, err)
	}
	return sock
}

// The bare launcher and the floor server speak the workload protocol: the
// program the launcher execs sees every variable the server sent.
func TestBareLauncherAgainstFloor(t *testing.T) {
	floor, bare := buildTools(t)
	sock := startFloorServer(t, floor, "5")
	cmd := exec.Command(bare, "/usr/bin/env")
	cmd.Env = []string{"BARE_SOCKET=" + sock, "KEPT=1"}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("barelauncher /usr/bin/env: %v", err)
	}
	got := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		got[l] = true
	}
	want := []string{"BARE_SOCKET=" + sock, "KEPT=1", "PATH=" + gen.PlatformPath}
	for k, v := range gen.Vars(0, 5) {
		want = append(want, k+"="+v)
	}
	for _, w := range want {
		if !got[w] {
			t.Errorf("the program's environment lacks %q; it has %q", w, out)
		}
	}
	if len(got) != len(want) {
		t.Errorf("the program saw %d variables, want %d: %q", len(got), len(want), out)
	}

	// Without a server the launcher fails as a launcher: 125.
	cmd = exec.Command(bare, "/bin/true")
	cmd.Env = []string{"BARE_SOCKET=" + sock + ".missing"}
	err = cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 125 {
		t.Errorf("barelauncher with no server: %v, want exit 125", err)
	}
}

// The load generator counts only requests inside the window, and every one
// of them gets an Env frame from the floor server.
func TestDriveFloor(t *testing.T) {
	floor, _ := buildTools(t)
	sock := startFloorServer(t, floor, "64")
	now := time.Now()
	res := drive(sock, 4, now, now.Add(50*time.Millisecond), now.Add(250*time.Millisecond))
	if res.Errors != 0 || res.N == 0 || len(res.LatNanos) != res.N {
		t.Fatalf("drive: %d requests, %d latencies, %d errors (%s); want some, one latency each, none failed", res.N, len(res.LatNanos), res.Errors, res.ErrText)
	}
	res = drive(sock+".missing", 2, now, now, time.Now().Add(20*time.Millisecond))
	if res.N != 0 || res.Errors == 0 || res.ErrText == "" {
		t.Errorf("drive without a server: %d requests, %d errors (%q); want only errors", res.N, res.Errors, res.ErrText)
	}
}

const pprofSample = `File: agentprof
Type: inuse_space
Showing nodes accounting for 173.89MB, 99.43% of 174.89MB total
Dropped 15 nodes (cum <= 0.87MB)
      flat  flat%   sum%        cum   cum%
   52.74MB 30.16% 30.16%    94.24MB 53.89%  github.com/envlet/envlet/agent.(*auditLog).sums
   41.50MB 23.73% 53.89%    41.50MB 23.73%  encoding/hex.EncodeToString (inline)
   39.50MB 22.59% 76.47%    39.50MB 22.59%  github.com/envlet/envlet/cache.(*Pool).Alloc
     512kB  0.29% 76.76%      512kB  0.29%  runtime.malg
         0     0% 76.76%   173.89MB 99.43%  github.com/envlet/envlet/agent.(*Agent).Run
`

func TestParsePprofTop(t *testing.T) {
	h := parsePprofTop(pprofSample)
	if want := mb(174.89); h.total != want {
		t.Errorf("total = %d, want %d", h.total, want)
	}
	for _, tt := range []struct {
		i          int
		name       string
		flat, cum  int64
		flatPercen float64
	}{
		{0, "agent.(*auditLog).sums", mb(52.74), mb(94.24), 30.16},
		{1, "encoding/hex.EncodeToString", mb(41.50), mb(41.50), 23.73},
		{3, "runtime.malg", 512 << 10, 512 << 10, 0.29},
		{4, "agent.(*Agent).Run", 0, mb(173.89), 0},
	} {
		if tt.i >= len(h.funcs) {
			t.Fatalf("only %d funcs parsed", len(h.funcs))
		}
		f := h.funcs[tt.i]
		if f.name != tt.name || f.flat != tt.flat || f.cum != tt.cum || f.flatPercent != tt.flatPercen {
			t.Errorf("funcs[%d] = %+v, want %s flat %d cum %d (%.2f%%)", tt.i, f, tt.name, tt.flat, tt.cum, tt.flatPercen)
		}
	}
	c := heapCause(h)
	// sums and its hex strings together: 94.24 MB of 174.89.
	if !strings.Contains(c, "94.2 MiB (54% of the heap)") || !strings.Contains(c, "`auditLog.sums`") {
		t.Errorf("heapCause = %q, want the audit sums with their hex strings first", c)
	}
	if !strings.Contains(c, "`cache.Buf` header") {
		t.Errorf("heapCause = %q, want the Pool.Alloc headers too (23%%)", c)
	}
	if strings.Contains(c, "w.reg.wipe") {
		t.Errorf("heapCause = %q names the registration wipe list, which this profile does not show", c)
	}
}

func mb(v float64) int64 { return int64(v * (1 << 20)) }

// The metrics section's agents: confAgent starts a real envletd from a
// config file, holding every registration, with /metrics answering when
// metrics_listen is set and nothing listening when it is not.
func TestConfAgentMetrics(t *testing.T) {
	bindir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", bindir, "../../cmd/envletd")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build envletd: %v\n%s", err, b)
	}
	work, err := os.MkdirTemp("", "el") // short: socket paths stay under 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	r := &runner{o: options{bin: bindir}, work: work}
	addr, err := freeLoopback()
	if err != nil {
		t.Fatal(err)
	}
	on, err := r.confAgent("on", "metrics_listen = "+addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(on.stop)
	st, err := on.status()
	if err != nil || st.Workloads != metricsWorkloads {
		t.Fatalf("status: %+v, %v; want %d workloads", st, err, metricsWorkloads)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics right after ready: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "envlet_") {
		t.Fatalf("GET /metrics: %s, %d bytes without envlet_ metrics", resp.Status, len(body))
	}
	off, err := r.confAgent("off", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(off.stop)
	if st, err := off.status(); err != nil || st.Workloads != metricsWorkloads {
		t.Fatalf("status without metrics: %+v, %v; want %d workloads", st, err, metricsWorkloads)
	}
	if b, err := os.ReadFile(filepath.Join(off.dir, "agent.log")); err != nil || strings.Contains(string(b), "serving metrics") {
		t.Errorf("agent without metrics_listen logged serving metrics (%v):\n%s", err, b)
	}
}
