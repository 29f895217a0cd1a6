package fetch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
)

// EtcdConfig says how to reach an etcd cluster.
type EtcdConfig struct {
	// Endpoints are client URLs, http://HOST:PORT or https://HOST:PORT.
	Endpoints []string
	// Prefix is put before every record key: `<Prefix><record key>`.
	Prefix string
	// CAFile, CertFile and KeyFile are PEM files for TLS: the CA that
	// signed the servers' certificates (empty: the system's roots), and
	// the client's own certificate and key (both or neither).
	CAFile, CertFile, KeyFile string
	// Timeout bounds every request (a Snapshot page, a Commit, a probe);
	// past it the backend reports ErrUnavailable. Default 5 s.
	Timeout time.Duration
	// ProbeInterval is how often the backend checks that it reaches a
	// quorum, for Health. Default 1 s. A check that has not answered
	// within Timeout has failed; a slower one delays the next.
	ProbeInterval time.Duration
	// Observe, when set, is told how long each request took, successful or
	// not (the agent's metrics); probes are not requests.
	Observe func(time.Duration)
}

// Etcd is the backend for many nodes: every agent reads and watches the same
// etcd cluster. Record keys are stored as `<prefix><key>`, values as the
// agent sealed them; etcd revisions are the backend's revisions, a key's
// mod_revision its ModRev. Etcd is safe for concurrent use.
type Etcd struct {
	cli     *clientv3.Client
	observe func(time.Duration) // EtcdConfig.Observe
	prefix  string
	keys    *Keyring
	timeout time.Duration

	link link

	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

var _ Backend = (*Etcd)(nil)

// snapshotPage is how many records one range request of Snapshot reads.
// etcd 3.4 walks its index from a page's first key to the end of the
// range on every page, so a whole read costs pages × records: at 1,000 a
// read of 140,000 records took 3.1× `etcdctl get --prefix` (one request),
// at 10,000 1.0× (make bench-etcd-org). Larger pages hold more of the
// response in memory at once.
const snapshotPage = 10000

// OpenEtcd makes a client for cfg. It does not wait for etcd: an
// unreachable cluster shows as ErrUnavailable from the calls and as
// Health().Connected false. keys, if not nil, guards Commit: a value that is
// not sealed with a key of the ring is refused before it is sent, so nothing
// in clear reaches etcd by mistake. The outcomes: an error for no
// endpoints, a malformed endpoint, an empty prefix or unreadable TLS files;
// else the backend.
func OpenEtcd(cfg EtcdConfig, keys *Keyring) (*Etcd, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("open etcd: no endpoints")
	}
	if cfg.Prefix == "" {
		return nil, errors.New("open etcd: empty key prefix")
	}
	secure := false
	for _, ep := range cfg.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("open etcd: endpoint %q: want http://HOST:PORT or https://HOST:PORT", ep)
		}
		secure = secure || u.Scheme == "https"
	}
	var tlsCfg *tls.Config
	if cfg.CAFile != "" || cfg.CertFile != "" || cfg.KeyFile != "" || secure {
		if (cfg.CertFile == "") != (cfg.KeyFile == "") {
			return nil, errors.New("open etcd: a client certificate needs both etcd_cert_file and etcd_key_file")
		}
		info := transport.TLSInfo{CertFile: cfg.CertFile, KeyFile: cfg.KeyFile, TrustedCAFile: cfg.CAFile}
		var err error
		if info.Empty() && cfg.CAFile == "" {
			tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
		} else if tlsCfg, err = info.ClientConfig(); err != nil {
			return nil, fmt.Errorf("open etcd: TLS: %w", err)
		}
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	probe := cfg.ProbeInterval
	if probe <= 0 {
		probe = time.Second
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: cfg.Endpoints,
		TLS:       tlsCfg,
		// A ping unanswered within the request timeout drops the
		// connection (a busy machine can take seconds to answer one).
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: timeout,
		PermitWithoutStream:  true,
		Logger:               zap.NewNop(),
		// Reconnect within seconds of etcd coming back (gRPC's default
		// backoff grows to two minutes).
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("open etcd: %w", err)
	}
	e := &Etcd{cli: cli, prefix: cfg.Prefix, keys: keys, timeout: timeout, observe: cfg.Observe, done: make(chan struct{})}
	e.wg.Add(1)
	go e.probeLoop(probe)
	return e, nil
}

// Health is what a backend knows of its link to the store.
type Health struct {
	// Connected: the last check reached the store (for etcd: a quorum).
	Connected bool
	// CurrentAt is when the data was last known current (zero: never).
	CurrentAt time.Time
}

// Health reports whether the last check reached a quorum, and when one
// last did. The checks are the probes and every request that needs a
// quorum (a read of Snapshot, a Commit) and succeeds.
func (e *Etcd) Health() Health {
	e.link.mu.Lock()
	defer e.link.mu.Unlock()
	return Health{Connected: e.link.connected, CurrentAt: e.link.currentAt}
}

// link is what the checks say of the connection to etcd.
type link struct {
	mu        sync.Mutex
	last      time.Time // start of the check whose outcome connected is
	connected bool
	currentAt time.Time // start of the last check that reached a quorum
	downSince time.Time // start of the first check that failed since then (zero: none)
}

// record keeps the outcome of a check that started at start, unless one
// that started later is already recorded (a slow probe that fails after a
// request went through says nothing new).
func (l *link) record(start time.Time, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if start.Before(l.last) {
		return
	}
	l.last, l.connected = start, ok
	switch {
	case ok:
		l.currentAt, l.downSince = start, time.Time{}
	case l.downSince.IsZero():
		l.downSince = start
	}
}

// knownDown says whether etcd is known to be away at now: every check has
// failed since one that started at least timeout ago. One failed check is
// not enough: a connection dropped and made again in a moment fails the
// probe in flight.
func (l *link) knownDown(now time.Time, timeout time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.connected && !l.downSince.IsZero() && now.Sub(l.downSince) >= timeout
}

// probeLoop checks, every interval, that a linearizable read goes through
// (which needs a leader and a quorum) within the request timeout, like any
// request: a check slowed down by a busy machine is not an outage.
func (e *Etcd) probeLoop(interval time.Duration) {
	defer e.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		start := time.Now()
		ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(context.Background()), e.timeout)
		_, err := e.cli.Get(ctx, e.prefix, clientv3.WithCountOnly())
		cancel()
		e.link.record(start, err == nil)
		select {
		case <-e.done:
			return
		case <-t.C:
		}
	}
}

// request derives a context for one request: the caller's, bounded by the
// timeout, and refused by a member that has no leader (so a partitioned
// member fails fast instead of serving stale reads or queueing writes).
func (e *Etcd) request(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), e.timeout)
	if e.observe == nil {
		return ctx, cancel
	}
	start := time.Now()
	return ctx, func() { cancel(); e.observe(time.Since(start)) }
}

// errClosedEtcd is the error of a call on a closed Etcd.
var errClosedEtcd = fmt.Errorf("etcd backend is closed: %w", ErrUnavailable)

// classify maps a client error: the caller's own cancellation stays as it
// is; a timeout, no leader or an unreachable cluster is ErrUnavailable.
func (e *Etcd) classify(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", what, ctx.Err())
	}
	select {
	case <-e.done:
		return fmt.Errorf("%s: %w", what, errClosedEtcd)
	default:
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: etcd did not answer in %v: %w", what, e.timeout, ErrUnavailable)
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) && (ee.Code() == codes.Unavailable || ee.Code() == codes.DeadlineExceeded) {
		return fmt.Errorf("%s: %v: %w", what, ee.Error(), ErrUnavailable)
	}
	if s, ok := status.FromError(err); ok && (s.Code() == codes.Unavailable || s.Code() == codes.DeadlineExceeded || s.Code() == codes.Canceled) {
		return fmt.Errorf("%s: %s: %w", what, s.Message(), ErrUnavailable)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Snapshot reads every record under the prefix at one revision, in pages.
// Its Rev is etcd's revision at the read, which may be above every ModRev
// (etcd counts writes outside the prefix too). Unreachable, or no answer
// within the timeout: an error that errors.Is ErrUnavailable.
func (e *Etcd) Snapshot(ctx context.Context) (Snapshot, error) {
	for {
		s, err := e.snapshotOnce(ctx)
		if errors.Is(err, rpctypes.ErrCompacted) {
			continue // compacted between two pages: read again
		}
		return s, err
	}
}

func (e *Etcd) snapshotOnce(ctx context.Context) (Snapshot, error) {
	var s Snapshot
	end := clientv3.GetPrefixRangeEnd(e.prefix)
	from := e.prefix
	start := time.Now()
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(snapshotPage)}
		if s.Rev != 0 {
			opts = append(opts, clientv3.WithRev(int64(s.Rev)))
		}
		rctx, cancel := e.request(ctx)
		resp, err := e.cli.Get(rctx, from, opts...)
		cancel()
		if errors.Is(err, rpctypes.ErrCompacted) {
			return Snapshot{}, err
		}
		if err != nil {
			return Snapshot{}, e.classify(ctx, "read etcd", err)
		}
		if s.Rev == 0 {
			s.Rev = Revision(resp.Header.Revision)
		}
		for _, kv := range resp.Kvs {
			s.KVs = append(s.KVs, KV{Key: string(kv.Key[len(e.prefix):]), Value: kv.Value, ModRev: Revision(kv.ModRevision)})
		}
		if !resp.More || len(resp.Kvs) == 0 {
			e.link.record(start, true)
			return s, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Commit applies txn as one etcd transaction: If every condition holds
// (ModRev n: mod_revision == n; ModRev 0: create_revision == 0, the key is
// absent) Then every op. The outcomes:
//
//   - an invalid txn (an empty key, a value not sealed with a key of the
//     ring): an error, nothing sent.
//   - a condition does not hold: an error that errors.Is ErrConflict,
//     nothing written.
//   - no op: the current revision, nothing written.
//   - etcd unreachable, without a leader, or no answer within the timeout:
//     an error that errors.Is ErrUnavailable. If the request was not sent
//     or etcd refused it (no leader), nothing was written; if it timed out
//     after etcd received it, etcd may still apply it when it recovers,
//     like any store that a client loses mid-request.
//   - otherwise the revision of the transaction, once etcd committed it
//     (a quorum has it on disk).
func (e *Etcd) Commit(ctx context.Context, txn Txn) (Revision, error) {
	if len(txn.Ops) == 0 {
		rctx, cancel := e.request(ctx)
		defer cancel()
		start := time.Now()
		s, err := e.cli.Get(rctx, e.prefix, clientv3.WithCountOnly())
		if err != nil {
			return 0, e.classify(ctx, "commit", err)
		}
		e.link.record(start, true)
		return Revision(s.Header.Revision), nil
	}
	cmps := make([]clientv3.Cmp, 0, len(txn.Conds))
	for _, c := range txn.Conds {
		if c.Key == "" {
			return 0, errors.New("commit: empty key in a condition")
		}
		k := e.prefix + c.Key
		if c.ModRev == 0 {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
		} else {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", int64(c.ModRev)))
		}
	}
	ops := make([]clientv3.Op, 0, len(txn.Ops))
	for _, op := range txn.Ops {
		if op.Key == "" {
			return 0, errors.New("commit: empty key")
		}
		k := e.prefix + op.Key
		if op.Delete {
			ops = append(ops, clientv3.OpDelete(k))
			continue
		}
		if e.keys != nil {
			if id, ok := SealedKeyID(op.Value); !ok || !e.keys.Has(id) {
				return 0, fmt.Errorf("commit %s: %w", op.Key, errNotSealed)
			}
		}
		ops = append(ops, clientv3.OpPut(k, string(op.Value)))
	}
	if e.link.knownDown(time.Now(), e.timeout) && e.cli.ActiveConnection().GetState() != connectivity.Ready {
		// No connection, and every probe for a whole timeout failed: fail
		// now, sending nothing, rather than at the timeout with an
		// uncertain outcome.
		return 0, fmt.Errorf("commit: etcd is unreachable; nothing was sent: %w", ErrUnavailable)
	}
	rctx, cancel := e.request(ctx)
	defer cancel()
	start := time.Now()
	var resp *clientv3.TxnResponse
	var err error
	for {
		resp, err = e.cli.Txn(rctx).If(cmps...).Then(ops...).Commit()
		if !errors.Is(err, rpctypes.ErrNoLeader) {
			break
		}
		// The member refused it before proposing (an election is on):
		// nothing was written, so trying again is safe.
		select {
		case <-rctx.Done():
		case <-time.After(50 * time.Millisecond):
			continue
		}
		break
	}
	if errors.Is(err, rpctypes.ErrTooManyOps) {
		return 0, fmt.Errorf("commit: the change touches %d records, more than etcd's --max-txn-ops allows (default 128): raise it on the etcd servers", max(len(cmps), len(ops)))
	}
	if err != nil {
		err = e.classify(ctx, "commit", err)
		if errors.Is(err, ErrUnavailable) && !errors.Is(err, errClosedEtcd) {
			// Sent, and no answer: etcd may have it and apply it later.
			return 0, fmt.Errorf("%v: %w", err, ErrUncertain)
		}
		return 0, err
	}
	e.link.record(start, true) // committed or not, it went through raft
	if !resp.Succeeded {
		keys := make([]string, len(txn.Conds))
		for i, c := range txn.Conds {
			keys[i] = c.Key
		}
		return 0, fmt.Errorf("commit: a condition on %s did not hold: %w", strings.Join(keys, ", "), ErrConflict)
	}
	return Revision(resp.Header.Revision), nil
}

// Watch delivers every change under the prefix after `after`, one Batch per
// etcd revision, in order. It follows etcd through reconnects and leader
// changes: the client resumes the watch from the last revision it
// delivered, and when etcd cancels it (no leader) Watch starts it again
// from there. When etcd has compacted past the revision to resume from,
// Watch sends a Reset batch at the compaction revision and goes on from it;
// the reader re-reads the Snapshot and skips the batches it already holds.
// The channel is closed when ctx ends or the backend is closed.
func (e *Etcd) Watch(ctx context.Context, after Revision) <-chan Batch {
	return runWatch(ctx, &e.wg, e.done, make(chan Batch, 64), func(ctx context.Context, send func(Batch) bool) {
		e.watch(ctx, after, send)
	})
}

func (e *Etcd) watch(ctx context.Context, after Revision, send func(Batch) bool) {
	next := after + 1
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := e.cli.Watch(wctx, e.prefix, clientv3.WithPrefix(), clientv3.WithRev(int64(next)))
		for resp := range wch {
			if resp.CompactRevision != 0 {
				next = Revision(resp.CompactRevision)
				if !send(Batch{Rev: next, Reset: true}) {
					wcancel()
					return
				}
				break
			}
			if resp.Err() != nil {
				break
			}
			backoff = 100 * time.Millisecond
			var b Batch
			for _, ev := range resp.Events {
				rev := Revision(ev.Kv.ModRevision)
				if b.Rev != 0 && rev != b.Rev {
					if !send(b) {
						wcancel()
						return
					}
					next, b = b.Rev+1, Batch{}
				}
				b.Rev = rev
				b.Events = append(b.Events, Event{
					Key:     string(ev.Kv.Key[len(e.prefix):]),
					Value:   ev.Kv.Value,
					ModRev:  rev,
					Deleted: ev.Type == mvccpb.DELETE,
				})
			}
			if b.Rev != 0 {
				if !send(b) {
					wcancel()
					return
				}
				next = b.Rev + 1
			}
		}
		wcancel()
		// The watch ended without ctx ending: etcd cancelled it (no leader,
		// compaction) or the client gave up; start again from next.
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// Close stops the probe and every watch and closes the client.
func (e *Etcd) Close() error {
	var err error
	e.closeOnce.Do(func() {
		close(e.done)
		e.wg.Wait()
		err = e.cli.Close()
		if errors.Is(err, context.Canceled) {
			err = nil
		}
	})
	if err != nil {
		return fmt.Errorf("close etcd: %w", err)
	}
	return nil
}

// Compact asks etcd to discard the history before rev (used by tests and
// operators; etcd's own --auto-compaction does it in production).
func (e *Etcd) Compact(ctx context.Context, rev Revision) error {
	rctx, cancel := e.request(ctx)
	defer cancel()
	if _, err := e.cli.Compact(rctx, int64(rev), clientv3.WithCompactPhysical()); err != nil {
		return e.classify(ctx, "compact", err)
	}
	return nil
}
