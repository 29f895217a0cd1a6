package selfrun

import (
	"context"
	"strings"
	"testing"
)

func TestBooks(t *testing.T) {
	b := New(2)
	r1, ok1 := b.Acquire("alice")
	_, ok2 := b.Acquire("alice")
	_, ok3 := b.Acquire("alice")
	_, okBob := b.Acquire("bob")
	if !ok1 || !ok2 || ok3 || !okBob {
		t.Fatalf("acquire: %v %v %v %v", ok1, ok2, ok3, okBob)
	}
	r1()
	r1() // a second release gives nothing back twice
	if b.Held("alice") != 1 {
		t.Fatalf("held %d after one release", b.Held("alice"))
	}
	if _, ok := b.Acquire("alice"); !ok {
		t.Fatal("a released run is not free again")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b.Run(ctx)
	select {
	case <-b.Stopping():
	default:
		t.Fatal("Stopping not closed")
	}
	if _, ok := b.Acquire("carol"); ok {
		t.Fatal("a run started after stop")
	}
}

func TestNewID(t *testing.T) {
	long := strings.Repeat("u", 200)
	for _, u := range []string{"alice", "1001", long} {
		id := NewID(u)
		if len(id) > maxID || !strings.HasPrefix(id, "run-"+u[:min(len(u), 20)]) {
			t.Errorf("NewID(%d bytes) = %q", len(u), id)
		}
	}
	if x, y := NewID("a"), NewID("a"); x == y {
		t.Error("two ids alike")
	}
}

func TestTrackEnd(t *testing.T) {
	b := New(1)
	ended, forget := b.Track("run-a-1")
	if b.End("run-b-1") {
		t.Fatal("ended a run never tracked")
	}
	if !b.End("run-a-1") {
		t.Fatal("End of a tracked run")
	}
	select {
	case <-ended:
	default:
		t.Fatal("End did not close the run's channel")
	}
	forget()
	if b.End("run-a-1") {
		t.Fatal("ended twice")
	}
}
