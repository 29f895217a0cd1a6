// Package launcher is envlet-exec: it asks the agent for this workload's
// environment over the workload socket, merges it into its own, and replaces
// itself with the program (execve), or prints one secret with --get-secret,
// or, with --watch, runs the program as its child and follows changes.
//
// It owns the launcher's command line, its exit codes and its messages:
//
//	125  the launcher failed: bad usage, agent unreachable or timed out, the
//	     agent refused (its code and message are printed), a bad reply
//	126  the program was found but cannot be run (permission, format, …)
//	127  the program was not found
//	     otherwise the program's own status, since the program replaces us;
//	     with --watch, the program's exit status, or 128+N when signal N
//	     ended it, as a shell reports it
//
// Messages go to stderr as "envlet-exec: CODE: message" and never hold a
// value: not a variable's, not the token's, not the secret's, not PATH's.
// The codes: USAGE, TOKEN_FILE (unreadable or too long), AGENT_UNREACHABLE
// (connect, send, or the ENVLET_TIMEOUT wait failed), BAD_REPLY (not a frame
// of the right type), the agent's own code from an Error frame (for
// instance WORKLOAD_UNKNOWN), OUTPUT (--get-secret could not write stdout),
// NOT_FOUND (127) and NOT_EXECUTABLE (126). With --watch, the launcher also
// notes what it does while the program runs: CHANGED (a change, and what it
// does about it), KILLED (the program outlived the grace period),
// WATCH_LOST and WATCH_RESUMED (the connection to the agent), and the codes
// above when a fetch after a change fails.
//
// The environment the program gets is the launcher's own less every
// ENVLET_* name, with the agent's entries applied in order; PROGRAM is looked
// up on that environment's PATH, as execvp(3) does but without its /bin/sh
// fallback for ENOEXEC, which is a 126 here.
//
// With --watch (supervise.go, watch.go) the launcher opens a Watch
// connection, starts the program with the first Env as a child in its own
// process group (the terminal's foreground group when stdin is a terminal
// the launcher holds), passes on the signals a supervisor should (SIGTERM,
// SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, …), reaps every
// child, and on each Changed frame fetches the environment (GetEnv) and
// restarts the program with it, signals it, or stops it and exits
// (--on-change). A lost connection is reopened with backoff while the
// program runs on; the Env the new connection opens with stands for any
// Changed missed meanwhile.
//
// It must stay small and quick to start, as a container entrypoint and an
// ExecStart= in front of every workload. So it imports only agent/wire,
// golang.org/x/sys/unix and small parts of the standard library: no net
// (the socket is a raw fd), no fmt, no flag, no os/exec, no encoding/json,
// no time.Timer or time.ParseDuration, no logging library.
// cmd/envlet-exec/deps_test.go holds it to that and to a size bound.
// Without --watch it keeps no state and starts no goroutine.
package launcher
