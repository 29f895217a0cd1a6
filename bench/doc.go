// Package bench holds the harnesses behind `make bench` (scripts/bench.sh):
//
//   - barelauncher: the floor for "a Go launcher": connect to a Unix socket,
//     send GetEnv, read one Env frame, exec. No flags, no merging rules, no
//     error words; what any Go launcher of this protocol must at least do.
//   - floorserver: the floor for "a Go server of this protocol": accept, read
//     the peer's credentials and one GetEnv frame, write a prebuilt Env frame
//     of the same size as the agent's, close. No matching, no audit.
//   - agentprof: envletd with Go CPU and heap profiles (-cpuprofile,
//     -memprofile written on SIGUSR1), for `go tool pprof`; benchrun takes the
//     memory section's heap profile with it.
//   - benchrun: the driver. It times launches with hyperfine, drives the
//     agent and the floor server with load from worker processes that run as
//     distinct uids, times change fan-out, start and memory, and writes
//     BENCHMARKS.md, each figure as a ratio against a baseline taken in the
//     same run, with the command that re-runs it.
//
// (flood, issue 4's, measures serving while other uids misbehave on the
// socket; scripts/bench.sh runs it too.) Nothing here is imported by the
// product.
package bench
