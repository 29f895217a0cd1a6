// Package selfrun keeps the books of self-service runs (`envlet run`,
// POST /v1/runs): how many each user holds at once, bounded so that
// self-service cannot grow the agent's registrations past what an
// operator allowed; the ids runs get; and the signal that the agent is
// stopping, so that every held run ends and its connection closes.
//
// A run is a registration that lives in the agent's memory only, for as
// long as the admin connection that asked for it stays open: the agent
// removes it when the client closes its side, when the client dies (the
// kernel closes its socket, kill -9 included), or when the agent stops.
// Nothing of it is written to the store, so nothing can be left there;
// its token file is removed with it, and one left by an agent that died
// is swept at the next start (token_dir holds only files of registrations).
//
// It owns no registration and takes no lock of the agent's: the agent's
// handler (agent/admin_run.go) registers and removes the workload; this
// package only counts, names and signals. It must not import the agent.
package selfrun
