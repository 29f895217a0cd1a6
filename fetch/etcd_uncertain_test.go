package fetch

import (
	"context"
	"errors"
	"syscall"
	"testing"

	"github.com/envlet/envlet/internal/etcdtest"
)

// TestEtcdCommitUncertain: a write that reaches a frozen etcd (SIGSTOP: its
// sockets stay open, so the request is received and never answered) fails
// with ErrUncertain, which is also ErrUnavailable; a write made while etcd
// is known to be away fails with ErrUnavailable alone, since nothing was
// sent. Either way the store is intact when etcd comes back.
func TestEtcdCommitUncertain(t *testing.T) {
	c := etcdtest.Start(t, 1)
	e := openEtcd(t, c, "/unc/", nil)
	mustCommit(t, e, Txn{Ops: []Op{put("a", "1")}})
	waitHealth(t, e, true)
	m := c.Members[0]
	if err := m.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Signal(syscall.SIGCONT) })
	_, err := e.Commit(context.Background(), Txn{Ops: []Op{put("a", "2")}})
	if !errors.Is(err, ErrUncertain) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Commit to a frozen etcd: %v; want ErrUncertain (and ErrUnavailable)", err)
	}
	// Once the probe has failed for a whole timeout the client knows etcd is
	// away and sends nothing: not uncertain.
	waitHealth(t, e, false)
	for {
		_, err = e.Commit(context.Background(), Txn{Ops: []Op{put("b", "1")}})
		if !errors.Is(err, ErrUncertain) {
			break
		}
		// The probe says down, but the connection still looked ready:
		// that write was sent. Try again until the shortcut applies.
	}
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Commit while etcd is known to be away: %v; want ErrUnavailable", err)
	}
	if err := m.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitHealth(t, e, true)
	got := records(mustSnapshot(t, e))
	if got != "a=1\n" && got != "a=2\n" && got != "a=1\nb=1\n" && got != "a=2\nb=1\n" {
		t.Fatalf("after etcd came back: %q", got)
	}
	t.Logf("after etcd came back: %q", got)
}
