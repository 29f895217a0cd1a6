// Command envlet is the admin CLI of envlet: it manages account variables,
// projects (members, variables, groups) and workload registrations, and
// explains the environment a workload gets, by calling the agent's admin API
// (HTTP/1.1 + JSON, docs/admin-api.md) over its Unix socket.
//
// It owns the command line and the output formats only. It holds no state,
// never decides who may do what (the agent does, from the caller's
// SO_PEERCRED), and never prints a variable's value in an error; values
// appear on stdout only as the agent returns them (masked unless --reveal).
//
// Exit codes: 0 done, 1 the command failed (stderr "envlet: CODE: message"),
// 2 bad usage ("envlet: USAGE: message"), 3 `envlet status` found the agent
// degraded ("envlet: DEGRADED: reasons", after the status).
//
// Shell completion (completion.go) offers names the agent lists for the
// caller, never values; man pages are generated from the command tree with
// `-tags mangen` (man.go), which keeps their generator out of the binary.
package main
