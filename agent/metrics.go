package agent

import (
	"context"
	"time"

	"github.com/envlet/envlet/agent/internal/metrics"
	"github.com/envlet/envlet/agent/wire"
)

// Prometheus metrics (agent/internal/metrics), served on metrics_listen.
// The serve paths call the note* methods below, one line each; they cost
// an atomic load when metrics are off. Gauges are read at scrape time by
// metricsState from what the agent keeps anyway.

// openMetrics opens metrics_listen and returns the part of Run that serves
// it (one that only waits for ctx when metrics_listen is not set). It is
// called before any socket serves, so every note* sees the same Metrics.
func (a *Agent) openMetrics() (func(context.Context) error, error) {
	if a.cfg.MetricsListen == "" {
		return func(ctx context.Context) error { <-ctx.Done(); return nil }, nil
	}
	l, err := metrics.Listen(a.cfg.MetricsListen)
	if err != nil {
		return nil, err
	}
	m := metrics.New(a.metricsState)
	a.metrics.Store(m)
	a.log.Info("serving metrics", "metrics_listen", a.cfg.MetricsListen)
	return func(ctx context.Context) error { return m.Serve(ctx, l) }, nil
}

// noteRequest counts a request on socket (workload, credentials) by its
// kind (requestKind; "credential").
func (a *Agent) noteRequest(socket, kind string) {
	if m := a.metrics.Load(); m != nil {
		m.Request(socket, kind)
	}
}

// noteAdminRequest counts an admin request by its HTTP method.
func (a *Agent) noteAdminRequest(method string) {
	if m := a.metrics.Load(); m != nil {
		switch method {
		case "GET", "POST", "PUT", "PATCH", "DELETE":
		default:
			method = "other"
		}
		m.Request("admin", method)
	}
}

// noteRefusal counts a refusal on socket with its error code.
func (a *Agent) noteRefusal(socket, code string) {
	if m := a.metrics.Load(); m != nil {
		m.Refused(socket, code)
	}
}

// noteGetEnv observes a GetEnv that began at start: `defer a.noteGetEnv(time.Now())`.
func (a *Agent) noteGetEnv(start time.Time) {
	if m := a.metrics.Load(); m != nil {
		m.GetEnvDone(time.Since(start))
	}
}

// noteMount counts a mount job's result (the mounter's done hook).
func (a *Agent) noteMount(ok bool) {
	if m := a.metrics.Load(); m != nil {
		m.MountDone(ok)
	}
}

// noteEtcd observes one etcd request (fetch.EtcdConfig.Observe).
func (a *Agent) noteEtcd(d time.Duration) {
	if m := a.metrics.Load(); m != nil {
		m.EtcdRequest(d)
	}
}

func requestKind(t wire.Type) string {
	switch t {
	case wire.TypeGetEnv:
		return "get_env"
	case wire.TypeGetSecret:
		return "get_secret"
	case wire.TypeWatch:
		return "watch"
	}
	return "other"
}

// metricsState is the gauges' State, read at each scrape.
func (a *Agent) metricsState() metrics.State {
	st := metrics.State{Backend: a.backendName(), Connected: true, MemoryLocked: true}
	a.mu.RLock()
	st.Revision = int64(a.model.rev)
	st.Workloads = len(a.workloads)
	for _, w := range a.workloads {
		if served := w.servedRev.Load(); served != 0 && served < int64(w.envRev) {
			st.StaleWorkloads++
		}
	}
	a.mu.RUnlock()
	if a.mirror != nil {
		ms := a.mirror.Status()
		st.Connected = ms.Connected
		st.HasSnapshot = true
		st.SnapshotAge = -1
		if !ms.CurrentAt.IsZero() {
			st.SnapshotAge = time.Since(ms.CurrentAt).Seconds()
		}
		if !ms.Connected {
			st.StaleSeconds = st.SnapshotAge
		}
	}
	ps := a.pool.Stats()
	st.LockedBytes, st.MemoryLocked = ps.LockedBytes, ps.Locked
	st.MountQueue = a.mounts.queueDepth()
	if a.audit != nil && a.audit.q != nil {
		st.AuditQueueBytes, st.AuditWritten = a.audit.q.depth()
	}
	return st
}

// queueDepth is how many mount jobs wait for a writer or are being written.
func (m *mounter) queueDepth() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.pending) + len(m.busy)
}

// depth is the bytes queued and the records written so far.
func (q *auditQueue) depth() (int, uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.buf), q.written
}

func (m *mounter) noteResult(ok bool) {
	if m.result != nil {
		m.result(ok)
	}
}

// cfgObservingEtcd is the config with the etcd backend told to report each
// request's time to the metrics (which need not exist yet: noteEtcd checks).
func (a *Agent) cfgObservingEtcd() Config {
	c := a.cfg
	c.etcdObserve = a.noteEtcd
	return c
}
