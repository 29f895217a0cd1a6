package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/envlet/envlet/agent/wire"
	"github.com/envlet/envlet/fetch"
	"github.com/hashicorp/go-hclog"
)

// referenceFrame is the Env frame by the reference algorithm: the layers
// of layersFor merged by resolve (explain's path), encoded as served.
func referenceFrame(a *Agent, w *workload) []byte {
	res := a.resolve(a.layersFor(w.reg.User, w.reg.Project, w), nil)
	entries := make([]wire.Entry, len(res))
	for i, r := range res {
		entries[i] = wire.Entry{Name: r.name, Value: r.value, Unset: len(r.value) == 0}
	}
	return wire.AppendEnv(nil, uint64(a.model.rev), entries)
}

// referenceWarnings lists what the reference leaves out, as "layer/name".
func referenceWarnings(a *Agent, w *workload) []string {
	var out []string
	layers := a.layersFor(w.reg.User, w.reg.Project, w)
	for _, l := range layers {
		for _, lo := range l.leftOut {
			kind := "missing "
			if lo.reason == protectedReason {
				kind = "protected "
			}
			out = append(out, kind+l.name+"/"+lo.name)
		}
	}
	a.resolve(layers, func(l, n string) { out = append(out, "reserved "+l+"/"+n) })
	sort.Strings(out)
	return out
}

// logLines collects what the agent logs, as JSON objects.
type logLines struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// warnings lists the left-out variables logged since the last call, as
// referenceWarnings names them.
func (l *logLines) warnings(t *testing.T) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		kind := "reserved "
		switch msg := m["@message"].(string); {
		case strings.Contains(msg, "secret"):
			kind = "missing "
		case strings.Contains(msg, "protected"):
			kind = "protected "
		}
		out = append(out, kind+m["layer"].(string)+"/"+m["name"].(string))
	}
	l.b.Reset()
	sort.Strings(out)
	return out
}

// shape is a random arrangement of every layer a workload can have.
type shape struct {
	rng *rand.Rand
}

// Names overlap between layers, include reserved ones, and sort in ways
// that test the merge ("A" < "AB" < "A_" < "B" < "a").
var shapeNames = []string{"A", "AB", "A_", "B", "C", "PATH", "SHARED", "PROJECT_ID", "HOPS_X", "ENVLET_Y", "Z", "a", "_"}

func (s shape) value() string {
	switch s.rng.IntN(6) {
	case 0:
		return "" // clears the name
	case 1:
		return strings.Repeat("v", 1+s.rng.IntN(300))
	}
	return fmt.Sprintf("v%d", s.rng.IntN(1000))
}

func (s shape) names() []string {
	var out []string
	for _, n := range shapeNames {
		if s.rng.IntN(3) == 0 {
			out = append(out, n)
		}
	}
	return out
}

func (s shape) own() map[string]string {
	m := map[string]string{}
	for _, n := range s.names() {
		m[n] = s.value()
	}
	return m
}

// stored makes a variable set; some variables name a secret (S0…S3).
func (s shape) stored(a *Agent) varSet {
	set := varSet{}
	for _, n := range s.names() {
		var flags byte
		val := s.value()
		switch s.rng.IntN(4) {
		case 0:
			flags, val = flagFromRef|flagSecret, fmt.Sprintf("S%d", s.rng.IntN(4))
		case 1:
			flags = flagSecret
		}
		set[n] = &variable{val: a.pool.Copy(append([]byte{flags}, val...))}
	}
	return set
}

func (s shape) secrets(a *Agent) varSet {
	set := varSet{}
	for i := range 4 {
		if s.rng.IntN(2) == 0 {
			set[fmt.Sprintf("S%d", i)] = &variable{val: a.pool.Copy(append([]byte{0}, s.value()...))}
		}
	}
	return set
}

// build fills a's model and platform at random and returns a workload of
// user u in project p.
func (s shape) build(a *Agent) *workload {
	m := a.model
	var defaults []Default
	for _, n := range s.names() {
		defaults = append(defaults, Default{n, s.value()})
	}
	if len(defaults) > 0 && s.rng.IntN(4) == 0 {
		// The config file refuses a name given twice; of a list built by
		// hand the first counts.
		defaults = append(defaults, Default{defaults[s.rng.IntN(len(defaults))].Name, s.value()})
	}
	a.cfg.Defaults = defaults
	a.setPlatform()
	if s.rng.IntN(6) > 0 {
		p := m.project("p")
		p.metaRev = 1
		if s.rng.IntN(3) > 0 {
			p.meta.Members = []string{"x", "u"}
		} else if s.rng.IntN(2) == 0 {
			p.meta.Owners = []string{"u"}
		}
		p.vars = s.stored(a)
		m.markStale(&p.view, &p.vars)
		for i := range s.rng.IntN(5) {
			name := fmt.Sprintf("g%d", s.rng.IntN(4))
			p.meta.Groups = append(p.meta.Groups, name)
			if i == 0 && s.rng.IntN(4) == 0 {
				continue // assigned, but not in the model
			}
			if m.groups[name] != nil {
				continue // assigned twice: the later place counts
			}
			g := m.group(name)
			if s.rng.IntN(5) > 0 {
				g.metaRev = 1 // else: deleted, its variables not yet
			}
			g.vars = s.stored(a)
			m.markStale(&g.view, &g.vars)
		}
	}
	if s.rng.IntN(4) > 0 {
		u := m.user("u")
		u.vars = s.stored(a)
		m.markStale(&u.view, &u.vars)
	}
	m.userSecrets["u"] = s.secrets(a)
	m.projSecrets["p"] = s.secrets(a)
	m.rev = fetch.Revision(s.rng.IntN(1 << 20))
	return &workload{reg: Registration{ID: "w", User: "u", Project: "p"}, runtime: a.ownVars(s.own()), execution: a.ownVars(s.own())}
}

// TestEnvFrameMatchesReference: over random layer shapes, the served
// frame is byte for byte the reference merge's, whether the model's
// sorted views are fresh or stale, and a resolution logs what the
// reference leaves out, neither more nor less.
func TestEnvFrameMatchesReference(t *testing.T) {
	logs := &logLines{}
	a := testAgent(t)
	a.log = hclog.New(&hclog.LoggerOptions{Output: logs, JSONFormat: true, Level: hclog.Warn})
	for seed := range uint64(2000) {
		a.model = newModel()
		s := shape{rand.New(rand.NewPCG(seed, 7))}
		w := s.build(a)
		want := referenceFrame(a, w)
		wantWarn := referenceWarnings(a, w)

		stale := a.envFrame(w)
		if !bytes.Equal(stale.Bytes(), want) {
			t.Fatalf("seed %d, stale views: frame differs from the reference\n got %q\nwant %q", seed, stale.Bytes(), want)
		}
		stale.Free()
		if got := logs.warnings(t); len(got) > 0 {
			t.Fatalf("seed %d: serving logged %v", seed, got)
		}

		a.mu.Lock()
		a.resolveWorkload(w)
		a.mu.Unlock()
		if got := logs.warnings(t); strings.Join(got, ",") != strings.Join(wantWarn, ",") {
			t.Fatalf("seed %d: resolution logged %v, the reference leaves out %v", seed, got, wantWarn)
		}
		fresh := a.envFrame(w)
		if !bytes.Equal(fresh.Bytes(), want) {
			t.Fatalf("seed %d, fresh views: frame differs from the reference\n got %q\nwant %q", seed, fresh.Bytes(), want)
		}
		var d digester
		if sum := d.digest(a, w); sum != maphash.Bytes(a.rs.seed, envBody(fresh.Bytes())) {
			t.Fatalf("seed %d: the digest is not that of the served body", seed)
		}
		d.free()
		logs.warnings(t) // the digest's, as checked above
		fresh.Free()
		if _, _, err := wire.ReadFrame(bytes.NewReader(want), nil); err != nil {
			t.Fatalf("seed %d: the frame does not decode: %v", seed, err)
		}
		a.releaseOwn(w)
		a.model.free()
		if n := a.rs.names.ids; len(n) != 0 {
			t.Fatalf("seed %d: names still interned after release: %v", seed, n)
		}
	}
	if s := a.pool.Stats(); s.Buffers != len(a.platformBufs) {
		t.Fatalf("%d locked Bufs left, want only the platform's %d", s.Buffers, len(a.platformBufs))
	}
}

// fanAgent is an agent with a key ring whose model changes through apply,
// as the store's batches change it.
type fanAgent struct {
	*Agent
	rev fetch.Revision
}

func newFanAgent(t testing.TB) *fanAgent {
	cfg := baseConfig()
	cfg.Defaults = []Default{{"PATH", "/bin"}, {"SHARED", "platform"}, {"PROJECT_ID", "from-platform"}}
	a := New(cfg, hclog.NewNullLogger())
	a.setPlatform()
	keys, err := fetch.LoadKeyring(filepath.Join(tempDir(t), "keyring"), true)
	if err != nil {
		t.Fatal(err)
	}
	a.keys = keys
	return &fanAgent{Agent: a}
}

func tempDir(t testing.TB) string {
	d, err := os.MkdirTemp("", "el")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// ev builds the event of a record: a variable (name = value), or JSON meta.
func (f *fanAgent) varEv(key, value string) fetch.Event {
	return fetch.Event{Key: key, Value: f.sealVar(key, []byte(value), 0)}
}

func (f *fanAgent) metaEv(key string, v any) fetch.Event {
	return fetch.Event{Key: key, Value: f.sealJSON(key, v)}
}

// batch applies events as one committed batch of the store: apply, the
// new revision, resolution, all under the write lock.
func (f *fanAgent) batch(evs ...fetch.Event) fetch.Revision {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rev++
	t := newTouched()
	for _, ev := range evs {
		ev.ModRev = f.rev
		f.apply(ev, t)
	}
	f.setRev(f.rev)
	f.resolveTouched(t)
	return f.rev
}

func (f *fanAgent) register(t testing.TB, id, project string, uid uint32, runtime map[string]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u := uid
	if err := f.putWorkload(&Registration{ID: id, User: "u", Project: project, Match: Match{UID: &u}, Runtime: runtime}, sourceFile); err != nil {
		t.Fatal(err)
	}
}

// TestEnvRevMovesOnChange: envRev moves, and watchers hear of it, exactly
// when what the workload receives changes: not for a group value its own
// runtime variable overrides, a value set again unchanged, or a
// registration put again as it was.
func TestEnvRevMovesOnChange(t *testing.T) {
	f := newFanAgent(t)
	f.batch(f.metaEv(keyGroupMeta("g"), struct{}{}), f.varEv(keyGroupVar("g", "X"), "g1"), f.varEv(keyGroupVar("g", "Y"), "y1"),
		f.metaEv(keyProjMeta("p"), projectMeta{Members: []string{"u"}, Groups: []string{"g"}}), f.metaEv(keyProjMeta("q"), projectMeta{}))
	f.register(t, "over", "p", 5001, map[string]string{"X": "runtime"})
	f.register(t, "plain", "p", 5002, nil)
	f.register(t, "other", "q", 5003, nil)
	watch := map[string]*watcher{}
	for _, id := range []string{"over", "plain", "other"} {
		watch[id] = &watcher{wake: make(chan struct{}, 1), gone: make(chan struct{})}
		f.watchers.add(id, watch[id])
	}
	envRev := func(id string) fetch.Revision {
		f.mu.RLock()
		defer f.mu.RUnlock()
		return f.workloads[id].envRev
	}

	for _, step := range []struct {
		name  string
		do    func() fetch.Revision
		moved []string // the workloads whose envRev is the step's revision
	}{
		{"OverriddenGroupValue", func() fetch.Revision { return f.batch(f.varEv(keyGroupVar("g", "X"), "g2")) }, []string{"plain"}},
		{"GroupValue", func() fetch.Revision { return f.batch(f.varEv(keyGroupVar("g", "Y"), "y2")) }, []string{"over", "plain"}},
		{"SameValueAgain", func() fetch.Revision { return f.batch(f.varEv(keyGroupVar("g", "Y"), "y2")) }, nil},
		{"AccountVarOverridden", func() fetch.Revision { return f.batch(f.varEv(keyAcctVar("u", "X"), "acct")) }, []string{"plain"}},
		{"RegisteredAgainUnchanged", func() fetch.Revision {
			f.register(t, "over", "p", 5001, map[string]string{"X": "runtime"})
			return f.rev
		}, nil},
		{"RuntimeCleared", func() fetch.Revision {
			f.register(t, "over", "p", 5001, map[string]string{"X": ""})
			return f.rev
		}, []string{"over"}},
		{"UnassignedGroup", func() fetch.Revision {
			return f.batch(f.metaEv(keyProjMeta("p"), projectMeta{Members: []string{"u"}}))
		}, []string{"over", "plain"}}, // Y came from the group
		{"OtherProject", func() fetch.Revision { return f.batch(f.varEv(keyProjVar("q", "Q"), "q")) }, []string{"other"}},
	} {
		before := map[string]fetch.Revision{}
		for id := range watch {
			before[id] = envRev(id)
		}
		rev := step.do()
		for id, w := range watch {
			moved := contains(step.moved, id)
			got := envRev(id)
			switch {
			case moved && got != rev:
				t.Errorf("%s: %s envRev %d, want %d", step.name, id, got, rev)
			case !moved && got != before[id]:
				t.Errorf("%s: %s envRev moved from %d to %d", step.name, id, before[id], got)
			}
			select {
			case <-w.wake:
				if !moved {
					t.Errorf("%s: %s's watcher was notified", step.name, id)
				}
			default:
				if moved {
					t.Errorf("%s: %s's watcher was not notified", step.name, id)
				}
			}
		}
	}
}

// TestServeDuringFanOut serves GetEnv over a real workload socket while
// changes fan out to thousands of workloads (in parallel shards): every
// frame is whole and consistent (both variables of one change, never one
// old and one new), and once the last change is in, the workload is
// served it under its envRev.
func TestServeDuringFanOut(t *testing.T) {
	dir := tempDir(t)
	cfg := devConfig(dir)
	wd := cfg.WorkloadsDir
	if err := os.MkdirAll(wd, 0o755); err != nil {
		t.Fatal(err)
	}
	const workloads = 1500
	me := os.Getuid()
	for i := range workloads {
		uid := 200000 + i
		if i == 0 {
			uid = me
		}
		doc := fmt.Sprintf(`{"id":"w%d","user":"u%d","project":"p%d","match":{"uid":%d},"runtime":{"OWN":"w%d","R1":"x","R2":"y"}}`, i, i, i%100, uid, i)
		if err := os.WriteFile(filepath.Join(wd, fmt.Sprintf("w%d.json", i)), []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	a := New(cfg, hclog.NewNullLogger())
	ready := make(chan struct{})
	a.OnReady = func() { close(ready) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil && err != context.Canceled {
			t.Errorf("agent: %v", err)
		}
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("agent stopped: %v", err)
	}

	commit := func(ops ...fetch.Op) fetch.Revision {
		rev, err := a.backend.Commit(ctx, fetch.Txn{Ops: ops})
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	varOp := func(key, v string) fetch.Op { return fetch.Op{Key: key, Value: a.sealVar(key, []byte(v), 0)} }
	metaOp := func(key string, v any) fetch.Op { return fetch.Op{Key: key, Value: a.sealJSON(key, v)} }
	ops := []fetch.Op{metaOp(keyGroupMeta("fan"), struct{}{}), varOp(keyGroupVar("fan", "G1"), "v0"), varOp(keyGroupVar("fan", "G2"), "v0")}
	for i := range 100 {
		ops = append(ops, metaOp(keyProjMeta(fmt.Sprintf("p%d", i)), projectMeta{Groups: []string{"fan"}}))
	}
	commit(ops...)

	// Clients ask until told to stop; each frame must hold G1 == G2.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var served int
	for range 4 {
		wg.Go(func() {
			buf := make([]byte, 1<<16)
			for {
				select {
				case <-stop:
					return
				default:
				}
				env, _, err := getEnvOnce(cfg.WorkloadSocket, buf)
				if err != nil {
					t.Error(err)
					return
				}
				if env["OWN"] != "w0" || env["G1"] != env["G2"] {
					t.Errorf("an inconsistent frame: %v", env)
					return
				}
				mu.Lock()
				served++
				mu.Unlock()
			}
		})
	}
	var last fetch.Revision
	for i := 1; i <= 20; i++ {
		v := fmt.Sprintf("v%d", i)
		last = commit(varOp(keyGroupVar("fan", "G1"), v), varOp(keyGroupVar("fan", "G2"), v))
	}
	// Wait until the agent applied the last change.
	for {
		a.mu.RLock()
		rev, wait := a.model.rev, a.revWait
		a.mu.RUnlock()
		if rev >= last {
			break
		}
		<-wait
	}
	close(stop)
	wg.Wait()
	env, rev, err := getEnvOnce(cfg.WorkloadSocket, make([]byte, 1<<16))
	if err != nil || env["G1"] != "v20" || env["G2"] != "v20" {
		t.Fatalf("after the last change: %v, %v", env, err)
	}
	a.mu.RLock()
	for id, w := range a.workloads {
		if w.envRev != last {
			t.Errorf("%s: envRev %d, want %d", id, w.envRev, last)
			break
		}
	}
	a.mu.RUnlock()
	if rev < uint64(last) {
		t.Errorf("served at revision %d, before the last change %d", rev, last)
	}
	t.Logf("%d frames served during the changes", served)
}

// getEnvOnce asks the workload socket for this process's environment.
func getEnvOnce(sock string, buf []byte) (map[string]string, uint64, error) {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return nil, 0, err
	}
	defer c.Close()
	if _, err := c.Write(wire.AppendRequest(nil, wire.Request{Type: wire.TypeGetEnv})); err != nil {
		return nil, 0, err
	}
	typ, payload, err := wire.ReadFrame(c, buf)
	if err != nil {
		return nil, 0, err
	}
	if typ != wire.TypeEnv {
		code, msg, _ := wire.DecodeError(payload)
		return nil, 0, fmt.Errorf("%s: %s", code, msg)
	}
	rev, entries, err := wire.DecodeEnv(payload)
	if err != nil {
		return nil, 0, err
	}
	env := map[string]string{}
	for _, e := range entries {
		if !e.Unset {
			env[e.Name] = string(e.Value)
		}
	}
	return env, rev, nil
}

// benchVars are 64 runtime variables of 32-byte values under 10-byte
// names, as the benchmark harness registers (bench/internal/gen).
func benchVars(seed int) map[string]string {
	m := map[string]string{}
	for i := range 64 {
		m[fmt.Sprintf("BENCH_V%03d", i)] = fmt.Sprintf("%032d", seed*64+i)
	}
	return m
}

// BenchmarkEnvFrame merges and encodes one workload's environment (64
// runtime variables, a group variable, the platform PATH) as envFrame does
// for every GetEnv, against the floor of what it replaced: copying a frame
// kept ready into a new locked Buf.
func BenchmarkEnvFrame(b *testing.B) {
	f := newFanAgent(b)
	f.batch(f.metaEv(keyGroupMeta("g"), struct{}{}), f.varEv(keyGroupVar("g", "FANOUT"), "v0"),
		f.metaEv(keyProjMeta("p"), projectMeta{Groups: []string{"g"}}))
	f.register(b, "w", "p", 5000, benchVars(1))
	w := f.workloads["w"]
	f.mu.RLock()
	defer f.mu.RUnlock()
	ready := f.envFrame(w)
	defer ready.Free()
	b.Run("merge", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(ready.Len()))
		for b.Loop() {
			f.envFrame(w).Free()
		}
	})
	b.Run("copy-floor", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(ready.Len()))
		for b.Loop() {
			f.pool.Copy(ready.Bytes()).Free()
		}
	})
}

// BenchmarkResolveTouched10k: a group assigned to 1,000 projects of 10
// workloads each (64 runtime variables) changes; one op is the whole
// fan-out under the write lock, as the agent runs it after the batch is
// applied: digests in parallel shards, envRev, watchers.
func BenchmarkResolveTouched10k(b *testing.B) {
	f := newFanAgent(b)
	evs := []fetch.Event{f.metaEv(keyGroupMeta("fan"), struct{}{}), f.varEv(keyGroupVar("fan", "FANOUT"), "v0")}
	for i := range 1000 {
		evs = append(evs, f.metaEv(keyProjMeta(fmt.Sprintf("p%04d", i)), projectMeta{Groups: []string{"fan"}}))
	}
	f.batch(evs...)
	for i := range 10000 {
		f.register(b, fmt.Sprintf("w%05d", i), fmt.Sprintf("p%04d", i/10), uint32(100000+i), benchVars(i))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	t := newTouched()
	t.groups["fan"] = true
	g := f.model.groups["fan"]
	n := 0
	for b.Loop() {
		n++
		// A new value each time, as a change would bring.
		old := g.vars["FANOUT"]
		g.vars["FANOUT"] = &variable{val: f.pool.Copy(fmt.Appendf(nil, "\x00v%d", n)), rev: old.rev}
		old.val.Free()
		f.model.markStale(&g.view, &g.vars)
		f.rev++
		f.setRev(f.rev)
		f.resolveTouched(t)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n)/10000, "ns/workload")
	for _, w := range f.workloads {
		if w.envRev != f.rev {
			b.Fatalf("%s: envRev %d, want %d", w.reg.ID, w.envRev, f.rev)
		}
	}
}

// TestOwnLayers: a workload's own variables round-trip through their
// packed locked buffer, with name ids and value lengths of more than one
// varint byte; names shared by workloads are interned once and given back
// when the last workload holding them goes, and deregistration zeroes the
// values.
func TestOwnLayers(t *testing.T) {
	f := newFanAgent(t)
	big := map[string]string{}
	for i := range 200 { // in one chunk slot, so its memory can be read after Free
		big[fmt.Sprintf("N%03d", i)] = strings.Repeat("x", i) // "" clears N000
	}
	f.register(t, "big", "p", 6001, big)
	f.register(t, "small", "p", 6002, map[string]string{"N199": "own", "ONLY": "v"})
	f.mu.RLock()
	w := f.workloads["big"]
	l := f.ownLayer(layerRuntime, w.runtime)
	names := f.ownNames(w.runtime)
	mem := w.runtime.Bytes()
	f.mu.RUnlock()
	if len(l.vars) != 200 || len(names) != 200 {
		t.Fatalf("%d variables, %d names; want 200", len(l.vars), len(names))
	}
	for i, v := range l.vars {
		if want := fmt.Sprintf("N%03d", i); v.name != want || names[i] != want || string(v.value) != big[want] {
			t.Fatalf("variable %d: %s = %d bytes, want %s = %d bytes", i, v.name, len(v.value), want, i)
		}
	}
	if got := len(f.rs.names.ids); got != 201 {
		t.Fatalf("%d names interned, want 201", got)
	}
	if id := f.rs.names.ids["N199"]; f.rs.names.refs[id] != 2 {
		t.Fatalf("N299 held %d times, want 2", f.rs.names.refs[id])
	}

	// Put again with fewer names: the ones dropped are given back.
	f.register(t, "big", "p", 6001, map[string]string{"N001": "y"})
	if got := len(f.rs.names.ids); got != 3 {
		t.Fatalf("after the re-registration %d names interned, want 3 (N001, N199, ONLY)", got)
	}
	for _, b := range mem {
		if b != 0 {
			t.Fatal("the replaced layer's memory was not zeroed")
		}
	}
	f.mu.Lock()
	f.removeWorkload("big", sourceFile)
	f.removeWorkload("small", sourceFile)
	f.mu.Unlock()
	if got := len(f.rs.names.ids); got != 0 {
		t.Fatalf("after deregistration %d names interned, want none", got)
	}
	// A freed id is reused.
	f.register(t, "again", "p", 6003, map[string]string{"Z": "z"})
	if len(f.rs.names.names) != 201 {
		t.Fatalf("the table grew to %d ids; freed ones should be reused", len(f.rs.names.names))
	}
}
