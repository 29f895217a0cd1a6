// Package metrics serves the agent's Prometheus metrics on metrics_listen
// (a loopback TCP address or a Unix socket path; off unless set).
//
// It owns the metric names, their help and labels, the registry and the
// /metrics endpoint. Counters and histograms are fed by the agent through
// a few calls (Request, Refused, GetEnvDone, MountDone, EtcdRequest);
// gauges are read at scrape time from a State the agent fills from what it
// already keeps (its status), so scraping adds no bookkeeping to serving.
//
// What it must not do: carry a value, a token, a name or any other
// unbounded set in a label — every label value is one of a fixed set or a
// sanitized error code, and each label has a cap past which values are
// folded into "other"; listen anywhere but loopback or a Unix socket; import
// the agent (the agent imports it); block a caller (every call is an
// atomic add or a histogram observe).
package metrics
