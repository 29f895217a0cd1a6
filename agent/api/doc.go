// Package api is the contract of envletd's admin API (admin.sock, HTTP/1.1
// and JSON under /v1/, docs/admin-api.md): its error codes, the error body,
// and the request and reply types of every endpoint. It is declared once
// here and imported by the agent, the CLI (cmd/envlet), the web console and
// any other Go client; package client speaks it over the Unix socket.
//
// It owns the JSON shapes and the meaning of each code. It must not hold
// behaviour: no I/O, no net/http, nothing from the agent; and no value in
// an error message. The codes a workload sees on the workload socket are
// declared in agent/wire (the launcher may not import this package) and
// re-exported here under the same names.
//
// Compatibility: fields are only added, never renamed or retyped; a client
// decodes replies without DisallowUnknownFields so that an older client
// keeps working against a newer agent. The agent decodes request bodies
// with unknown fields rejected.
package api
