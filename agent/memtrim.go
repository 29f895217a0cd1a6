package agent

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// After a burst of requests (hundreds of launchers at once: a goroutine,
// its stack and a read buffer each) the Go runtime keeps the memory it
// grew to until a later collection, which an idle agent may not run for
// minutes. trimMemory looks every trimEvery: when the workload socket has
// been quiet since the last look and the runtime holds more than trimSlack
// beyond what the last collection found live, it collects and hands the
// free memory back to the kernel. So the agent's resident memory follows
// what it holds, not its busiest moment. A look is a few metric reads; a
// trim is one collection of the (small) live heap, and only after a burst.
const (
	trimEvery = 5 * time.Second
	trimSlack = 16 << 20
)

var trimMetrics = []string{
	"/memory/classes/total:bytes",         // everything the runtime has mapped
	"/memory/classes/heap/released:bytes", // of which given back already
	"/gc/heap/live:bytes",                 // live heap at the last collection
}

// runtimeHeld reads how much memory the Go runtime holds, and how much of
// the heap the last collection found live.
func runtimeHeld(s []metrics.Sample) (held, live uint64) {
	metrics.Read(s)
	for _, x := range s {
		if x.Value.Kind() != metrics.KindUint64 {
			return 0, 0
		}
	}
	return s[0].Value.Uint64() - s[1].Value.Uint64(), s[2].Value.Uint64()
}

func (a *Agent) trimMemory(ctx context.Context) error {
	s := make([]metrics.Sample, len(trimMetrics))
	for i, name := range trimMetrics {
		s[i].Name = name
	}
	t := time.NewTicker(trimEvery)
	defer t.Stop()
	seen := a.requests.Load()
	busy := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		n := a.requests.Load()
		quiet := n == seen
		seen = n
		held, live := runtimeHeld(s)
		if shouldTrim(busy, quiet, held, live) {
			debug.FreeOSMemory()
			after, _ := runtimeHeld(s)
			a.log.Debug("returned memory to the kernel after a burst", "held_bytes", held, "now_held_bytes", after)
		}
		busy = !quiet
	}
}

// shouldTrim says whether to hand memory back: once the workload socket
// has gone quiet after being busy (under load the memory would be taken
// again at once; idle, there is nothing new to hand back), and only when
// the runtime holds trimSlack more than the last collection found live.
// That collection may have run during the burst and found much live, so a
// quiet agent holding more than trimSlack twice over trims anyway: the
// trim's own collection finds out.
func shouldTrim(wasBusy, quiet bool, held, live uint64) bool {
	return wasBusy && quiet && (held > live+trimSlack || held > 2*trimSlack)
}
