package memtrim

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

func TestShouldTrim(t *testing.T) {
	t.Parallel()
	const slack = DefaultSlack
	for _, tt := range []struct {
		busy, quiet bool
		held, live  uint64
		want        bool
	}{
		{true, true, 10 << 20, 8 << 20, false},         // little beyond what is live
		{true, true, 60 << 20, 20 << 20, true},         // a burst's leftovers, now quiet
		{true, false, 60 << 20, 20 << 20, false},       // still busy: it would be taken again
		{false, true, 60 << 20, 20 << 20, false},       // idle since the last look: trimmed then
		{true, true, 8<<20 + slack, 8 << 20, false},    // exactly the slack
		{true, true, 8<<20 + slack + 1, 8 << 20, true}, // just over it
		{true, true, 2*slack + 1, 40 << 20, true},      // live measured mid-burst: trim anyway
	} {
		if got := shouldTrim(tt.busy, tt.quiet, tt.held, tt.live, slack); got != tt.want {
			t.Errorf("shouldTrim(%v, %v, %d, %d) = %v, want %v", tt.busy, tt.quiet, tt.held, tt.live, got, tt.want)
		}
	}
}

// TestRuntimeHeld: the metrics Run reads exist in this Go and say
// something sensible (a renamed metric would read as zero and never trim).
// Not parallel: it measures the heap.
func TestRuntimeHeld(t *testing.T) {
	keep := make([]byte, 8<<20)
	runtime.GC()
	held, live := runtimeHeld(newSamples())
	if live < 8<<20 || held < live {
		t.Fatalf("runtimeHeld = held %d, live %d with 8 MiB live", held, live)
	}
	runtime.KeepAlive(keep)
}

// TestRunTrimsAfterBurst: with a slack of one byte, a counter that moves
// once and then stands still gets a trim reported, and Run returns when its
// context ends.
func TestRunTrimsAfterBurst(t *testing.T) {
	var calls atomic.Uint64
	trimmed := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{
			// 1 at the start, 2 at the first look (busy), 2 after (quiet).
			Work:  func() uint64 { return min(calls.Add(1), 2) },
			Every: time.Millisecond,
			Slack: 1,
			Trimmed: func(before, after uint64) {
				select {
				case trimmed <- struct{}{}:
				default:
				}
			},
		})
	}()
	<-trimmed
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
}
