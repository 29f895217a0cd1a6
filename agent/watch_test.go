package agent

import "testing"

// TestWatchSetCoalesces: notifying never blocks, and a watcher that has
// not caught up sees one wake-up holding the newest revision.
func TestWatchSetCoalesces(t *testing.T) {
	var s watchSet
	w := &watcher{wake: make(chan struct{}, 1), gone: make(chan struct{})}
	other := &watcher{wake: make(chan struct{}, 1), gone: make(chan struct{})}
	if !s.add("a", w) || !s.add("b", other) {
		t.Fatal("add refused")
	}
	for rev := uint64(1); rev <= 1000; rev++ {
		s.notify("a", rev)
	}
	if len(w.wake) != 1 || w.rev.Load() != 1000 {
		t.Fatalf("wake-ups %d, revision %d; want 1 and 1000", len(w.wake), w.rev.Load())
	}
	if len(other.wake) != 0 {
		t.Fatal("another workload's watcher was woken")
	}
	s.drop("a")
	select {
	case <-w.gone:
	default:
		t.Fatal("drop did not end the watch")
	}
	s.closeAll()
	select {
	case <-other.gone:
	default:
		t.Fatal("closeAll did not end the watch")
	}
	if s.add("b", &watcher{wake: make(chan struct{}, 1), gone: make(chan struct{})}) {
		t.Fatal("a watch was added after closeAll")
	}
}

func TestWatchSetLimit(t *testing.T) {
	var s watchSet
	var ws []*watcher
	for range maxWatchers {
		w := &watcher{wake: make(chan struct{}, 1), gone: make(chan struct{})}
		if !s.add("a", w) {
			t.Fatalf("watch %d refused", len(ws)+1)
		}
		ws = append(ws, w)
	}
	if s.add("a", &watcher{}) {
		t.Fatal("a watch beyond the limit was added")
	}
	if !s.add("b", &watcher{}) {
		t.Fatal("the limit is per workload")
	}
	s.remove("a", ws[0])
	if !s.add("a", &watcher{}) || s.count("a") != maxWatchers {
		t.Fatal("a freed slot was not reusable")
	}
}
