package agent

import (
	"runtime"
	"runtime/metrics"
	"testing"
)

func TestShouldTrim(t *testing.T) {
	for _, tt := range []struct {
		busy, quiet bool
		held, live  uint64
		want        bool
	}{
		{true, true, 10 << 20, 8 << 20, false},             // little beyond what is live
		{true, true, 60 << 20, 20 << 20, true},             // a burst's leftovers, now quiet
		{true, false, 60 << 20, 20 << 20, false},           // still busy: it would be taken again
		{false, true, 60 << 20, 20 << 20, false},           // idle since the last look: trimmed then
		{true, true, 8<<20 + trimSlack, 8 << 20, false},    // exactly the slack
		{true, true, 8<<20 + trimSlack + 1, 8 << 20, true}, // just over it
		{true, true, 2*trimSlack + 1, 40 << 20, true},      // live measured mid-burst: trim anyway
	} {
		if got := shouldTrim(tt.busy, tt.quiet, tt.held, tt.live); got != tt.want {
			t.Errorf("shouldTrim(%v, %v, %d, %d) = %v, want %v", tt.busy, tt.quiet, tt.held, tt.live, got, tt.want)
		}
	}
}

// TestRuntimeHeld: the metrics trimMemory reads exist in this Go and say
// something sensible (a renamed metric would read as zero and never trim).
func TestRuntimeHeld(t *testing.T) {
	s := make([]metrics.Sample, len(trimMetrics))
	for i, name := range trimMetrics {
		s[i].Name = name
	}
	keep := make([]byte, 8<<20)
	runtime.GC()
	held, live := runtimeHeld(s)
	if live < 8<<20 || held < live {
		t.Fatalf("runtimeHeld = held %d, live %d with 8 MiB live", held, live)
	}
	runtime.KeepAlive(keep)
}
