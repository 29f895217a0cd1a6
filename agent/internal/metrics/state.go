package metrics

import "github.com/prometheus/client_golang/prometheus"

// gauge is one metric read from State at scrape time.
type gauge struct {
	desc  *prometheus.Desc
	value func(State) (float64, bool) // false: not exported for this agent
}

func always(f func(State) float64) func(State) (float64, bool) {
	return func(s State) (float64, bool) { return f(s), true }
}

func boolf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

var gauges = []gauge{
	{prometheus.NewDesc("envlet_store_revision", "The revision of the store the agent serves.", nil, nil),
		always(func(s State) float64 { return float64(s.Revision) })},
	{prometheus.NewDesc("envlet_workloads", "Registered workloads.", nil, nil),
		always(func(s State) float64 { return float64(s.Workloads) })},
	{prometheus.NewDesc("envlet_workloads_stale", "Workloads served once whose environment has changed since (they run with an old value).", nil, nil),
		always(func(s State) float64 { return float64(s.StaleWorkloads) })},
	{prometheus.NewDesc("envlet_backend_connected", "1 while the backend answers (always 1 for the local store), else 0.", []string{"backend"}, nil),
		nil},
	{prometheus.NewDesc("envlet_backend_stale_seconds", "Seconds since the data served was last known current; 0 while connected, -1 if never.", nil, nil),
		always(func(s State) float64 { return s.StaleSeconds })},
	{prometheus.NewDesc("envlet_snapshot_age_seconds", "Seconds since the data held (etcd's last read or snapshot file) was known current; -1 if never. etcd backend only.", nil, nil),
		func(s State) (float64, bool) { return s.SnapshotAge, s.HasSnapshot }},
	{prometheus.NewDesc("envlet_mount_queue_depth", "File-mounted environments waiting to be written or being written.", nil, nil),
		always(func(s State) float64 { return float64(s.MountQueue) })},
	{prometheus.NewDesc("envlet_audit_queue_bytes", "Bytes of audit records queued, not yet written.", nil, nil),
		always(func(s State) float64 { return float64(s.AuditQueueBytes) })},
	{prometheus.NewDesc("envlet_locked_bytes", "Bytes of the values' memory locked in RAM (mlock).", nil, nil),
		always(func(s State) float64 { return float64(s.LockedBytes) })},
	{prometheus.NewDesc("envlet_memory_lock_failed", "1 when some mlock failed (values may reach swap), else 0.", nil, nil),
		always(func(s State) float64 { return boolf(!s.MemoryLocked) })},
}

var auditWritten = prometheus.NewDesc("envlet_audit_records_total", "Audit records written to the audit log (or the journal).", nil, nil)

// stateCollector exports gauges from the State read at each scrape.
type stateCollector func() State

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, g := range gauges {
		ch <- g.desc
	}
	ch <- auditWritten
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	s := c()
	for _, g := range gauges {
		if g.value == nil { // envlet_backend_connected: its label is the backend's kind
			ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, boolf(s.Connected), backendLabel(s.Backend))
			continue
		}
		if v, ok := g.value(s); ok {
			ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, v)
		}
	}
	ch <- prometheus.MustNewConstMetric(auditWritten, prometheus.CounterValue, float64(s.AuditWritten))
}

// backendLabel is the backend's kind, one of a fixed set.
func backendLabel(b string) string {
	switch b {
	case "local", "etcd":
		return b
	}
	return "other"
}
