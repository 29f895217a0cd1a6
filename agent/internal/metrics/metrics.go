package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// State is what the agent knows at scrape time, for the gauges.
type State struct {
	Revision        int64 // the store's revision
	Workloads       int   // registered workloads
	StaleWorkloads  int   // served once, and their environment changed since
	Backend         string
	Connected       bool    // the backend answers (always true for the local store)
	StaleSeconds    float64 // since the data was last known current; 0 while connected, -1 never
	HasSnapshot     bool    // the backend keeps a snapshot (etcd)
	SnapshotAge     float64 // seconds since the data held was last known current; -1 never
	MountQueue      int     // mount jobs waiting or being written
	AuditQueueBytes int     // audit lines queued, not yet written
	AuditWritten    uint64  // audit records written (or handed to the journal)
	LockedBytes     int64   // values' locked memory
	MemoryLocked    bool    // every mlock succeeded
}

// Metrics is the agent's registry and its instruments. Its methods are safe
// for concurrent use.
type Metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	refusals *prometheus.CounterVec
	getEnv   prometheus.Histogram
	mounts   *prometheus.CounterVec
	etcd     prometheus.Histogram
	labels   capped
	// counters holds the counter of each (socket, type) and (socket, code)
	// seen, so the serve path skips the label hashing and the cap's lock.
	counters sync.Map // counterKey -> prometheus.Counter
}

type counterKey struct {
	refusal      bool
	socket, name string
}

// maxLabelValues caps the distinct values each free label (type, code) may
// take; beyond it a value is counted as "other".
const maxLabelValues = 64

// New returns the metrics of an agent whose gauges state reads at each scrape.
func New(state func() State) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envlet_requests_total",
			Help: "Requests received, by socket (workload, admin, credentials) and type (get_env, get_secret, watch; the HTTP method on admin; credential).",
		}, []string{"socket", "type"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envlet_refusals_total",
			Help: "Requests refused, by socket and error code (PERMISSION_DENIED, WORKLOAD_UNKNOWN, ...).",
		}, []string{"socket", "code"}),
		getEnv: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "envlet_getenv_duration_seconds",
			Help:    "Time to answer a GetEnv request once it is read (match, merge, write), served or refused.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .5},
		}),
		mounts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envlet_mount_writes_total",
			Help: "File-mounted environments written or removed, by result (ok, failed).",
		}, []string{"result"}),
		etcd: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "envlet_etcd_request_duration_seconds",
			Help:    "Time of each etcd request (read page, commit, watch start), successful or not.",
			Buckets: prometheus.ExponentialBuckets(.0005, 2.5, 12),
		}),
	}
	m.mounts.WithLabelValues("ok")
	m.mounts.WithLabelValues("failed")
	m.reg.MustRegister(m.requests, m.refusals, m.getEnv, m.mounts, m.etcd, stateCollector(state),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Request counts a request on socket (a fixed name) of type kind.
func (m *Metrics) Request(socket, kind string) {
	m.counter(counterKey{false, socket, kind}).Inc()
}

func (m *Metrics) counter(k counterKey) prometheus.Counter {
	if c, ok := m.counters.Load(k); ok {
		return c.(prometheus.Counter)
	}
	vec, label := m.requests, "type"
	if k.refusal {
		vec, label = m.refusals, "code"
	}
	v := m.labels.value(label, k.name)
	c := vec.WithLabelValues(k.socket, v)
	if v != k.name {
		return c // folded into "other": not cached, so the cache stays bounded too
	}
	if c, loaded := m.counters.LoadOrStore(k, c); loaded {
		return c.(prometheus.Counter)
	}
	return c
}

// Refused counts a refusal on socket with an error code. A code that is not
// an error code's shape (A-Z and _) is counted as "other": a code is the
// only label that comes from a message path, and it must never carry text.
func (m *Metrics) Refused(socket, code string) {
	if !isCode(code) {
		code = "other"
	}
	m.counter(counterKey{true, socket, code}).Inc()
}

// GetEnvDone observes the time one GetEnv took.
func (m *Metrics) GetEnvDone(d time.Duration) { m.getEnv.Observe(d.Seconds()) }

// MountDone counts a mount write (or removal) that succeeded or failed.
func (m *Metrics) MountDone(ok bool) {
	if ok {
		m.mounts.WithLabelValues("ok").Inc()
	} else {
		m.mounts.WithLabelValues("failed").Inc()
	}
}

// EtcdRequest observes the time one etcd request took.
func (m *Metrics) EtcdRequest(d time.Duration) { m.etcd.Observe(d.Seconds()) }

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

func isCode(s string) bool {
	if s == "" || len(s) > 48 {
		return false
	}
	for _, r := range s {
		if (r < 'A' || r > 'Z') && r != '_' {
			return false
		}
	}
	return true
}

// capped remembers the values a label has taken, so that a bug feeding it
// an unbounded set costs at most maxLabelValues series.
type capped struct {
	mu   sync.Mutex
	seen map[string]map[string]bool
}

func (c *capped) value(label, v string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = map[string]map[string]bool{}
	}
	s := c.seen[label]
	if s == nil {
		s = map[string]bool{}
		c.seen[label] = s
	}
	if s[v] {
		return v
	}
	if len(s) >= maxLabelValues {
		return "other"
	}
	s[v] = true
	return v
}

// CheckListen says whether addr may be metrics_listen: an absolute path (a
// Unix socket), or host:port where host is a loopback address or
// "localhost". Metrics tell an observer what the node runs; they are for a
// local Prometheus or an agent that forwards them, never the network.
func CheckListen(addr string) error {
	if strings.HasPrefix(addr, "/") {
		if len(addr) > 107 {
			return fmt.Errorf("unix socket path %s is over 107 bytes", addr)
		}
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return fmt.Errorf("%q: want a loopback HOST:PORT (127.0.0.1:9464, [::1]:9464) or an absolute Unix socket path", addr)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q: %q is not a loopback address; metrics are served on loopback or a Unix socket only", addr, host)
	}
	return nil
}

// Listen opens addr (CheckListen's forms). A Unix socket is made 0660 in
// a directory that must exist; a stale socket file there is replaced.
func Listen(addr string) (net.Listener, error) {
	if err := CheckListen(addr); err != nil {
		return nil, err
	}
	if !strings.HasPrefix(addr, "/") {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen metrics_listen %s: %w", addr, err)
		}
		return l, nil
	}
	if fi, err := os.Lstat(addr); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(addr)
	}
	l, err := net.Listen("unix", addr)
	if err != nil {
		return nil, fmt.Errorf("listen metrics_listen %s: %w", addr, err)
	}
	if err := os.Chmod(addr, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("listen metrics_listen %s: %w", filepath.Base(addr), err)
	}
	return l, nil
}

// Serve serves /metrics on l until ctx ends.
func (m *Metrics) Serve(ctx context.Context, l net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serve metrics: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		return nil
	}
}
