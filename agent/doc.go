// Package agent is envletd: it reads the variables from a backend (fetch),
// keeps their values in locked memory (cache), merges each registered
// workload's environment from its sorted layers (docs/design.md §2), and serves it
// on the workload socket (agent/wire) to the process the kernel says is on
// the other end. The admin socket (HTTP/1.1 + JSON under /v1/) manages
// variables, projects and registrations. Delivery beyond the launcher:
// file mounts (mount.go, envfile.go), Watch for --watch launchers
// (watch.go), systemd's LoadCredential= (credentials.go), sd_notify,
// socket activation and reload (notify.go).
//
// It owns: the config, the model of what is stored, validation and error
// codes, precedence, identity of callers, the audit log, mount_dir.
//
// It must not: put a value into a log line, an error message, the audit log
// or a panic; spend more than a merge of sorted layers on a request (no
// map, no sort: resolve.go, envFrame; a change recomputes only a digest per
// affected workload, in parallel); keep a resolved frame, or a value in the
// Go heap, longer than a request needs.
package agent
