package agent

import (
	"testing"
	"time"

	"github.com/envlet/envlet/agent/internal/metrics"
)

// BenchmarkServeMetrics measures what metrics cost a GetEnv, end to end
// over the workload socket of an in-process agent: each iteration makes one
// request with metrics off and one with them on (interleaved, so the
// machine's load falls on both alike), and reports both times and their
// ratio. Run: go test -run '^$' -bench ServeMetrics -benchtime 20000x ./agent/
func BenchmarkServeMetrics(b *testing.B) {
	a, sock, _ := serveAgent(b, func(a *Agent) {
		admin := &caller{peer: peer{uid: 0}, user: "root", admin: true}
		h := a.adminHandler()
		for _, r := range []struct{ method, path, body string }{
			{"POST", "/v1/projects", `{"name":"p"}`},
			{"PUT", "/v1/projects/p/env/PV", `{"value":"v"}`},
			{"PUT", "/v1/users/root/env/AV", `{"value":"v"}`},
			{"POST", "/v1/workloads", `{"id":"w","user":"root","project":"p","match":{"uid":0}}`},
		} {
			if w := call(h, admin, r.method, r.path, []byte(r.body)); w.Code/100 != 2 {
				b.Fatalf("%s %s: %d %s", r.method, r.path, w.Code, w.Body.String())
			}
		}
	})
	m := metrics.New(a.metricsState)
	buf := make([]byte, 64<<10)
	once := func() {
		if _, _, err := getEnvOnce(sock, buf); err != nil {
			b.Fatal(err)
		}
	}
	once() // warm up
	var off, on time.Duration
	b.ReportAllocs()
	timed := func(mm *metrics.Metrics) time.Duration {
		a.metrics.Store(mm)
		t0 := time.Now()
		once()
		return time.Since(t0)
	}
	// Which goes first alternates: the second request of a pair finds
	// the first one's audit record still being written.
	first := true
	for b.Loop() {
		if first {
			off += timed(nil)
			on += timed(m)
		} else {
			on += timed(m)
			off += timed(nil)
		}
		first = !first
	}
	a.metrics.Store(nil)
	n := float64(b.N)
	b.ReportMetric(float64(off.Nanoseconds())/n, "ns/getenv-off")
	b.ReportMetric(float64(on.Nanoseconds())/n, "ns/getenv-on")
	b.ReportMetric(float64(on)/float64(off), "on/off")
}
