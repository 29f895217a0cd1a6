package memtrim

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// After a burst of requests (hundreds of launchers at once: a goroutine,
// its stack and a read buffer each) the Go runtime keeps the memory it
// grew to until a later collection, which an idle process may not run for
// minutes. Run looks every Config.Every: when the work counter has not
// moved since the last look and the runtime holds more than Config.Slack
// beyond what the last collection found live, it collects and hands the
// free memory back to the kernel. A look is a few metric reads; a trim is
// one collection of the (small) live heap, and only after a burst.
const (
	DefaultEvery = 5 * time.Second
	DefaultSlack = 16 << 20
)

// Config says what to watch and how often. Zero fields take the defaults.
type Config struct {
	// Work counts the work done so far (requests served); required.
	Work func() uint64
	// Every is the interval between looks.
	Every time.Duration
	// Slack is how much the runtime may hold beyond the live heap before
	// a quiet process trims.
	Slack uint64
	// Trimmed, if set, is told what the runtime held before and after a
	// trim (for a debug log line).
	Trimmed func(heldBefore, heldAfter uint64)
}

var trimMetrics = []string{
	"/memory/classes/total:bytes",         // everything the runtime has mapped
	"/memory/classes/heap/released:bytes", // of which given back already
	"/gc/heap/live:bytes",                 // live heap at the last collection
}

func newSamples() []metrics.Sample {
	s := make([]metrics.Sample, len(trimMetrics))
	for i, name := range trimMetrics {
		s[i].Name = name
	}
	return s
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

// Run looks and trims until ctx is done; it returns nil then.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Every <= 0 {
		cfg.Every = DefaultEvery
	}
	if cfg.Slack == 0 {
		cfg.Slack = DefaultSlack
	}
	s := newSamples()
	t := time.NewTicker(cfg.Every)
	defer t.Stop()
	seen := cfg.Work()
	busy := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		n := cfg.Work()
		quiet := n == seen
		seen = n
		held, live := runtimeHeld(s)
		if shouldTrim(busy, quiet, held, live, cfg.Slack) {
			debug.FreeOSMemory()
			if cfg.Trimmed != nil {
				after, _ := runtimeHeld(s)
				cfg.Trimmed(held, after)
			}
		}
		busy = !quiet
	}
}

// shouldTrim says whether to hand memory back: once the work counter has
// stood still after moving (under load the memory would be taken again at
// once; idle, there is nothing new to hand back), and only when the
// runtime holds slack more than the last collection found live. That
// collection may have run during the burst and found much live, so a quiet
// process holding more than slack twice over trims anyway: the trim's own
// collection finds out.
func shouldTrim(wasBusy, quiet bool, held, live, slack uint64) bool {
	return wasBusy && quiet && (held > live+slack || held > 2*slack)
}
