package fetch

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// errCatchUpNeedsRead: what changed since the snapshot cannot be told from
// the records written since (some were deleted, or the snapshot is not of
// this cluster's history); the reader reads the whole prefix instead.
var errCatchUpNeedsRead = errors.New("catch-up needs a whole read")

// ChangesSince brings a reader that holds the prefix as it was at `after`
// (an agent's snapshot file, holding held records) to etcd's current
// revision without reading the whole prefix: it reads only the records
// written since (etcd filters by mod revision on its side), and counts
// the prefix at the same revision. The records written since come back as
// one batch at that revision. The counts tell whether any record the
// reader holds was deleted: held + new keys - deleted = now. Deletes
// cannot be named from the records that remain, so any delete (and a
// snapshot ahead of etcd: another cluster's history) is an error that
// errors.Is errCatchUpNeedsRead, and the reader reads the whole prefix.
// This reads etcd's current state, not its history, so it works past a
// compaction too. Unavailable: an error that errors.Is ErrUnavailable.
func (e *Etcd) ChangesSince(ctx context.Context, after Revision, held func(key string) bool, heldCount int) ([]Batch, Revision, error) {
	rctx, cancel := e.request(ctx)
	defer cancel()
	resp, err := e.cli.Get(rctx, e.prefix, clientv3.WithPrefix(), clientv3.WithMinModRev(int64(after)+1))
	if err != nil {
		return nil, 0, e.classify(ctx, "read etcd", err)
	}
	cur := Revision(resp.Header.Revision)
	if cur < after {
		return nil, 0, fmt.Errorf("%w: the snapshot is at revision %d, etcd at %d", errCatchUpNeedsRead, after, cur)
	}
	count, err := e.cli.Get(rctx, e.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithRev(int64(cur)))
	if err != nil {
		return nil, 0, e.classify(ctx, "count etcd", err)
	}
	b := Batch{Rev: cur}
	added := 0
	for _, kv := range resp.Kvs {
		key := string(kv.Key[len(e.prefix):])
		if !held(key) {
			added++
		}
		b.Events = append(b.Events, Event{Key: key, Value: kv.Value, ModRev: Revision(kv.ModRevision)})
	}
	if deleted := int64(heldCount+added) - count.Count; deleted != 0 {
		return nil, 0, fmt.Errorf("%w: %d held records were deleted since revision %d", errCatchUpNeedsRead, deleted, after)
	}
	if len(b.Events) == 0 {
		return nil, cur, nil
	}
	return []Batch{b}, cur, nil
}
