package agent

import (
	"context"

	"github.com/envlet/envlet/agent/internal/memtrim"
)

// trimMemory hands memory back to the kernel after a burst of workload
// requests (package memtrim says when).
func (a *Agent) trimMemory(ctx context.Context) error {
	return memtrim.Run(ctx, memtrim.Config{
		Work: a.requests.Load,
		Trimmed: func(held, after uint64) {
			a.log.Debug("returned memory to the kernel after a burst", "held_bytes", held, "now_held_bytes", after)
		},
	})
}
