package fetch

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// errCatchUpNeedsRead: etcd no longer holds the history a catch-up needs
// (compacted past the snapshot's revision), or the snapshot is not of this
// cluster's history; the reader reads the whole prefix instead.
var errCatchUpNeedsRead = errors.New("catch-up needs a whole read")

// ChangesSince brings a reader that holds the prefix as it was at `after`
// (an agent's snapshot file) to etcd's current revision without reading the
// whole prefix: it asks etcd for its revision (a count, which reads no
// values), then replays etcd's history from after+1 up to that revision
// with a watch, keeping the events under the prefix. The watch covers the
// whole key space so that every revision shows up (each is a write to some
// key): the event at etcd's revision ends the replay, whether or not the
// prefix changed since. A watch of only the prefix could not tell "no more
// changes" from "not delivered yet" (etcd 3.4 answers progress requests
// before a new watch has caught up). The cost is the writes since the
// snapshot, of any prefix; not the size of the store. The outcomes: the
// batches, in revision order (none if the prefix did not change); an error
// that errors.Is errCatchUpNeedsRead if etcd compacted past after+1 or is
// behind `after`; ErrUnavailable (or any other error, such as a permission
// denied on the key space) when etcd does not answer: the reader then
// reads the whole prefix.
func (e *Etcd) ChangesSince(ctx context.Context, after Revision) ([]Batch, Revision, error) {
	rctx, cancel := e.request(ctx)
	defer cancel()
	resp, err := e.cli.Get(rctx, e.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return nil, 0, e.classify(ctx, "read etcd's revision", err)
	}
	cur := Revision(resp.Header.Revision)
	switch {
	case cur < after:
		return nil, 0, fmt.Errorf("%w: the snapshot is at revision %d, etcd at %d", errCatchUpNeedsRead, after, cur)
	case cur == after:
		return nil, cur, nil
	}
	wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(rctx))
	defer wcancel()
	wch := e.cli.Watch(wctx, "\x00", clientv3.WithFromKey(), clientv3.WithRev(int64(after+1)))
	var out []Batch
	for wr := range wch {
		if wr.CompactRevision != 0 {
			return nil, 0, fmt.Errorf("%w: etcd compacted at %d, the snapshot is at %d", errCatchUpNeedsRead, wr.CompactRevision, after)
		}
		if err := wr.Err(); err != nil {
			return nil, 0, e.classify(ctx, "replay etcd's history", err)
		}
		done := false
		for _, ev := range wr.Events {
			rev := Revision(ev.Kv.ModRevision)
			if rev >= cur {
				done = true
			}
			if rev > cur || len(ev.Kv.Key) < len(e.prefix) || string(ev.Kv.Key[:len(e.prefix)]) != e.prefix {
				continue
			}
			if len(out) == 0 || out[len(out)-1].Rev != rev {
				out = append(out, Batch{Rev: rev})
			}
			b := &out[len(out)-1]
			b.Events = append(b.Events, Event{
				Key:     string(ev.Kv.Key[len(e.prefix):]),
				Value:   ev.Kv.Value,
				ModRev:  rev,
				Deleted: ev.Type == mvccpb.DELETE,
			})
		}
		if done {
			return out, cur, nil
		}
	}
	return nil, 0, e.classify(ctx, "replay etcd's history", rctx.Err())
}
