// Package memtrim hands memory the Go runtime no longer needs back to the
// kernel after a burst of work, so a long-running agent's resident memory
// follows what it holds rather than its busiest moment.
//
// It owns the decision (when a burst has ended and enough is held beyond
// what is live) and the runtime metrics it reads. It must not know what
// the work is: its caller gives it a counter of work done (Config.Work),
// and a quiet interval is one in which the counter did not move. It does
// no I/O and does not log; Config.Trimmed is told of each trim.
package memtrim
