package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/envlet/envlet/agent/wire"
	"github.com/envlet/envlet/fetch"
	"github.com/envlet/envlet/internal/etcdtest"
)

// The etcd backend end to end: real etcd servers (package etcdtest), real
// agents. ENVLET_E2E_BACKEND=etcd runs the whole suite with every agent on
// one etcd, each under a prefix of its own (`make test` does that pass
// with -skip '^TestEtcd', since the TestEtcd* tests below start their own
// agents on etcd in either pass).

// e2eBackend is the store the suite's agents use: "" (local) or "etcd".
var e2eBackend = os.Getenv("ENVLET_E2E_BACKEND")

var e2eEtcd struct {
	once    sync.Once
	c       *etcdtest.Cluster
	dir     string
	err     error
	prefixN atomic.Int64
}

// sharedE2EEtcd is the package's single-member etcd, started on first use.
func sharedE2EEtcd(t testing.TB) *etcdtest.Cluster {
	t.Helper()
	bin := etcdtest.Need(t)
	e2eEtcd.once.Do(func() {
		if e2eEtcd.dir, e2eEtcd.err = os.MkdirTemp("", "envlet-e2e-etcd-"); e2eEtcd.err == nil {
			e2eEtcd.c, e2eEtcd.err = etcdtest.StartDir(bin, e2eEtcd.dir, 1)
		}
	})
	if e2eEtcd.err != nil {
		t.Fatal(e2eEtcd.err)
	}
	return e2eEtcd.c
}

func stopE2EEtcd() {
	if e2eEtcd.c != nil {
		e2eEtcd.c.Stop()
		os.RemoveAll(e2eEtcd.dir)
	}
}

func uniquePrefix() string { return fmt.Sprintf("/e2e/%d/", e2eEtcd.prefixN.Add(1)) }

// e2eConfig finishes an agent's config text: a key given twice keeps its
// last value (so a test's extra lines override the harness's), and under
// ENVLET_E2E_BACKEND=etcd an agent without etcd lines gets the shared etcd
// and a prefix of its own.
func e2eConfig(t testing.TB, conf string) string {
	lines := strings.Split(conf, "\n")
	end := len(lines)
	for i, l := range lines {
		if strings.TrimSpace(l) == "[defaults]" {
			end = i
			break
		}
	}
	last := map[string]int{}
	for i, l := range lines[:end] {
		if k, _, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(strings.TrimSpace(l), "#") {
			last[strings.TrimSpace(k)] = i
		}
	}
	var out []string
	for i, l := range lines {
		if k, _, ok := strings.Cut(l, "="); ok && i < end && !strings.HasPrefix(strings.TrimSpace(l), "#") && last[strings.TrimSpace(k)] != i {
			continue
		}
		if _, has := last["etcd_endpoints"]; i == end && e2eBackend == "etcd" && !has {
			c := sharedE2EEtcd(t)
			out = append(out, "etcd_endpoints = "+strings.Join(c.Endpoints(), ","), "etcd_prefix = "+uniquePrefix())
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

// etcdConf reads the agent's etcd endpoints and prefix from its config.
func (a *agentProc) etcdConf() (endpoints, prefix string) {
	b, _ := os.ReadFile(a.config)
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, "=")
		switch strings.TrimSpace(k) {
		case "etcd_endpoints":
			endpoints = strings.TrimSpace(v)
		case "etcd_prefix":
			prefix = strings.TrimSpace(v)
		}
	}
	return endpoints, prefix
}

// etcdDump is `etcdctl get --prefix` of the agent's prefix, for noCanary;
// "" when the agent is not on etcd or etcd does not answer.
func (a *agentProc) etcdDump() (where, dump string) {
	eps, prefix := a.etcdConf()
	if eps == "" || a.config == "" {
		return "", ""
	}
	out, err := etcdtest.Etcdctl(eps, "get", "--prefix", prefix)
	if err != nil {
		return "", ""
	}
	return "etcdctl get --prefix " + prefix, out
}

// newKeyRing makes a key ring file for agents to share.
func newKeyRing(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "elkeys")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "keyring")
	if _, err := fetch.LoadKeyring(path, true); err != nil {
		t.Fatal(err)
	}
	return path
}

// copyKeyRing replaces to with from's content, atomically, as an operator
// distributing the key ring file would.
func copyKeyRing(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	tmp := to + ".new"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, to); err != nil {
		t.Fatal(err)
	}
}

// startEtcdAgent starts an agent on etcd with the given key ring file.
func startEtcdAgent(t *testing.T, endpoints []string, prefix, keyFile string) *agentProc {
	t.Helper()
	conf := fmt.Sprintf("etcd_endpoints = %s\netcd_prefix = %s\nkey_file = %s\netcd_timeout = 3s",
		strings.Join(endpoints, ","), prefix, keyFile)
	return startAgentConf(t, conf, "PATH = /usr/bin:/bin")
}

// statusMap is `envlet status --json`, whether the agent is healthy (exit
// 0) or degraded (exit 3: backend away, locks failed), which these tests
// bring about on purpose.
func (a *agentProc) statusMap() map[string]any {
	a.t.Helper()
	r := a.cliAs(0, "status", "--json")
	if r.code != 0 && r.code != 3 {
		a.t.Fatalf("envlet status --json: %s", r)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		a.t.Fatal(err)
	}
	return st
}

// eventually polls cond until it holds, failing after a generous limit (a
// guard against a hang: the change travels through another process and
// etcd, and there is no event to wait on from here).
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	limit := time.Now().Add(hangGuard)
	for !cond() {
		if time.Now().After(limit) {
			t.Fatalf("waited %v for %s", hangGuard, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitEnv waits until a workload run as uid on this agent gets name=want
// (want nil: name absent).
func (a *agentProc) waitEnv(uid uint32, name string, want *string) {
	a.t.Helper()
	var last map[string]string
	eventually(a.t, fmt.Sprintf("%s to reach the workload of uid %d on %s", name, uid, a.dir), func() bool {
		env, r := a.launchEnv(uid, uid)
		if r.code != 0 {
			return false
		}
		last = env
		v, ok := env[name]
		if want == nil {
			return !ok
		}
		return ok && v == *want
	})
	_ = last
}

func ptr(s string) *string { return &s }

// aliceWorkload creates project p with member alice, and registers her
// workload w for the processes of uid.
func (a *agentProc) aliceWorkload(uid uint32) {
	a.t.Helper()
	a.cli("project", "create", "p")
	a.cli("project", "add-member", "p", "alice")
	a.register(map[string]any{"id": "w", "user": "alice", "project": "p", "match": map[string]any{"uid": uid}})
}

// TestEtcdAgentsShareStore: three agents with their own dirs and sockets on
// one etcd; a change made through any of them (account, project, group)
// reaches the workloads of all; etcd holds no value in clear.
func TestEtcdAgentsShareStore(t *testing.T) {
	c := sharedE2EEtcd(t)
	keys := newKeyRing(t)
	prefix := uniquePrefix()
	var nodes []*agentProc
	for i := 0; i < 3; i++ {
		nodes = append(nodes, startEtcdAgent(t, c.Endpoints(), prefix, keys))
	}
	a, b, cn := nodes[0], nodes[1], nodes[2]
	uid := freeUID(t)
	const canary = "canary-etcd-acct-71d2"
	a.aliceWorkload(uid)
	a.cli("env", "set", "--user", "alice", "ACCT_TOKEN", canary)
	for _, n := range nodes {
		n.waitEnv(uid, "ACCT_TOKEN", ptr(canary)) // the registration and the value, through A
	}
	b.cli("project", "env", "set", "p", "PV", "from-b")
	for _, n := range nodes {
		n.waitEnv(uid, "PV", ptr("from-b"))
	}
	cn.cli("group", "create", "g")
	cn.cli("group", "set", "g", "GV", "g1")
	cn.cli("group", "assign", "g", "p")
	for _, n := range nodes {
		n.waitEnv(uid, "GV", ptr("g1"))
	}
	a.cli("group", "set", "g", "GV", "g2")
	for _, n := range nodes {
		n.waitEnv(uid, "GV", ptr("g2"))
	}
	b.cli("group", "unassign", "g", "p")
	for _, n := range nodes {
		n.waitEnv(uid, "GV", nil)
	}
	// Every node agrees on the revision.
	eventually(t, "the same revision on every node", func() bool {
		r := a.revision()
		return b.revision() == r && cn.revision() == r
	})
	out, err := c.Etcdctl("get", "--prefix", prefix)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, prefix+"u/alice/v/ACCT_TOKEN") || strings.Contains(out, canary) {
		t.Fatalf("etcdctl get --prefix: the record is missing or its value is in clear:\n%q", out)
	}
	for _, n := range nodes {
		st := n.statusMap()
		if st["backend"] != "etcd" || st["connected"] != true || st["stale_seconds"] != float64(0) {
			t.Fatalf("status %v", st)
		}
		n.stop()
		n.noCanary(canary) // logs, audit, snapshot file, and etcd itself
	}
}

// TestEtcdRacingWriters: two agents add the 64th account variable of one
// user at once: exactly one wins, every round; two creating the same name:
// exactly one wins.
func TestEtcdRacingWriters(t *testing.T) {
	c := sharedE2EEtcd(t)
	keys := newKeyRing(t)
	prefix := uniquePrefix()
	a := startEtcdAgent(t, c.Endpoints(), prefix, keys)
	b := startEtcdAgent(t, c.Endpoints(), prefix, keys)
	for i := 0; i < 63; i++ {
		a.cli("env", "set", "--user", "racer", fmt.Sprintf("V%02d", i), "x")
	}
	count := func(n *agentProc) int {
		return strings.Count(n.cli("env", "list", "--user", "racer"), "\n")
	}
	race := func(argsA, argsB []string) (ra, rb result) {
		start := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); <-start; ra = a.runAs(0, 0, "", nil, bins.envlet, argsA...) }()
		go func() { defer wg.Done(); <-start; rb = b.runAs(0, 0, "", nil, bins.envlet, argsB...) }()
		close(start)
		wg.Wait()
		return ra, rb
	}
	for round := 0; round < 5; round++ {
		eventually(t, "63 variables on both agents", func() bool { return count(a) == 63 && count(b) == 63 })
		na, nb := fmt.Sprintf("A%d", round), fmt.Sprintf("B%d", round)
		ra, rb := race([]string{"env", "create", "--user", "racer", na, "x"}, []string{"env", "create", "--user", "racer", nb, "x"})
		if (ra.code == 0) == (rb.code == 0) {
			t.Fatalf("round %d: both or neither won:\nA: %s\nB: %s", round, ra, rb)
		}
		winner, loser, name := a, rb, na
		if rb.code == 0 {
			winner, loser, name = b, ra, nb
		}
		if !strings.Contains(loser.stderr, "ENV_VAR_LIMIT_EXCEEDED") {
			t.Fatalf("round %d: the loser: %s", round, loser)
		}
		eventually(t, "64 variables on both agents", func() bool { return count(a) == 64 && count(b) == 64 })
		winner.cli("env", "delete", "--user", "racer", name)
	}
	eventually(t, "63 variables on both agents", func() bool { return count(a) == 63 && count(b) == 63 })
	ra, rb := race([]string{"env", "create", "--user", "racer", "SAME", "a"}, []string{"env", "create", "--user", "racer", "SAME", "b"})
	if (ra.code == 0) == (rb.code == 0) {
		t.Fatalf("same name: both or neither won:\nA: %s\nB: %s", ra, rb)
	}
	if loser := map[bool]result{true: rb, false: ra}[ra.code == 0]; !strings.Contains(loser.stderr, "ENV_VAR_ALREADY_EXISTS") {
		t.Fatalf("same name, the loser: %s", loser)
	}
}

// TestEtcdThreeMembers: one member down, reads and writes go on; two down,
// writes fail with BACKEND_UNAVAILABLE and change nothing while reads are
// served; all back, everything converges.
func TestEtcdThreeMembers(t *testing.T) {
	c := etcdtest.Start(t, 3)
	keys := newKeyRing(t)
	a := startEtcdAgent(t, c.Endpoints(), "/three/", keys)
	b := startEtcdAgent(t, c.Endpoints(), "/three/", keys)
	uid := freeUID(t)
	a.aliceWorkload(uid)
	a.cli("project", "env", "set", "p", "V", "0")
	b.waitEnv(uid, "V", ptr("0"))

	c.Members[0].Kill()
	if err := c.WaitHealthy(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	b.cli("project", "env", "set", "p", "V", "1")
	a.waitEnv(uid, "V", ptr("1"))
	b.waitEnv(uid, "V", ptr("1"))

	c.Members[1].Kill()
	for _, n := range []*agentProc{a, b} {
		eventually(t, "the agent to see it has lost etcd", func() bool { return n.statusMap()["connected"] == false })
	}
	for _, n := range []*agentProc{a, b} {
		r := n.cliAs(0, "project", "env", "set", "p", "V", "lost")
		if r.code != 1 || !strings.Contains(r.stderr, "BACKEND_UNAVAILABLE") {
			t.Fatalf("write without quorum: %s", r)
		}
		if env, r := n.launchEnv(uid, uid); env["V"] != "1" {
			t.Fatalf("read without quorum: %s", r)
		}
		st := n.statusMap()
		if st["backend"] != "etcd" || st["connected"] != false {
			t.Fatalf("status without quorum: %v", st)
		}
		if s, ok := st["stale_seconds"].(float64); !ok || s < 0 {
			t.Fatalf("stale_seconds without quorum: %v", st)
		}
	}
	for _, i := range []int{0, 1} {
		if err := c.Members[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitHealthy(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*agentProc{a, b} {
		eventually(t, "the agent to reconnect", func() bool { return n.statusMap()["connected"] == true })
	}
	a.cli("project", "env", "set", "p", "V2", "2")
	for _, n := range []*agentProc{a, b} {
		n.waitEnv(uid, "V2", ptr("2"))
		if env, _ := n.launchEnv(uid, uid); env["V"] != "1" {
			t.Fatalf("V = %q after the outage; the refused write must not apply", env["V"])
		}
	}
	eventually(t, "the same revision on both", func() bool { return a.revision() == b.revision() })
}

// TestEtcdRestartWhileDown: an agent restarted while etcd is down serves
// its encrypted snapshot, says how stale it is, refuses writes, and catches
// up when etcd is back; an agent without a snapshot waits for etcd.
func TestEtcdRestartWhileDown(t *testing.T) {
	c := etcdtest.Start(t, 1)
	keys := newKeyRing(t)
	a := startEtcdAgent(t, c.Endpoints(), "/down/", keys)
	b := startEtcdAgent(t, c.Endpoints(), "/down/", keys)
	uid := freeUID(t)
	a.aliceWorkload(uid)
	a.cli("project", "env", "set", "p", "V", "v1")
	a.waitEnv(uid, "V", ptr("v1"))
	a.stop() // writes the snapshot
	if _, err := os.Stat(filepath.Join(a.stateDir, fetch.SnapshotFileName)); err != nil {
		t.Fatalf("no snapshot file after a stop: %v", err)
	}
	b.cli("project", "env", "set", "p", "V", "v2") // a does not see this one
	c.Members[0].Kill()

	a.start()
	a.waitLog("serving the last-read snapshot", 1)
	if env, r := a.launchEnv(uid, uid); env["V"] != "v1" {
		t.Fatalf("served from the snapshot: %s", r)
	}
	st := a.statusMap()
	if st["backend"] != "etcd" || st["connected"] != false || st["serving_snapshot"] != true {
		t.Fatalf("status from the snapshot: %v", st)
	}
	if s, ok := st["stale_seconds"].(float64); !ok || s < 0 {
		t.Fatalf("stale_seconds: %v", st["stale_seconds"])
	}
	if r := a.cliAs(0, "project", "env", "set", "p", "V", "v3"); r.code != 1 || !strings.Contains(r.stderr, "BACKEND_UNAVAILABLE") {
		t.Fatalf("write while etcd is down: %s", r)
	}
	if err := c.Members[0].Start(); err != nil {
		t.Fatal(err)
	}
	a.waitEnv(uid, "V", ptr("v2"))
	eventually(t, "connected again", func() bool {
		st := a.statusMap()
		return st["connected"] == true && st["serving_snapshot"] == false && st["stale_seconds"] == float64(0)
	})

	// No snapshot and no etcd: the agent waits for etcd, then serves.
	a.stop()
	os.Remove(filepath.Join(a.stateDir, fetch.SnapshotFileName))
	c.Members[0].Kill()
	logs := newLogBuf()
	cmd := exec.Command(bins.envletd, "-config", a.config)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	logs.waitFor(t, "waiting for the store", 1)
	if strings.Contains(logs.String(), "serving:") {
		t.Fatalf("served without a store:\n%s", logs)
	}
	if err := c.Members[0].Start(); err != nil {
		t.Fatal(err)
	}
	logs.waitFor(t, "serving:", 1)
}

// TestEtcdCompactionDuringWatch: an agent cut off from etcd while others
// write and etcd compacts resumes with a full re-read and serves the last
// value.
func TestEtcdCompactionDuringWatch(t *testing.T) {
	c := etcdtest.Start(t, 3)
	keys := newKeyRing(t)
	a := startEtcdAgent(t, c.Endpoints()[:2], "/compact/", keys)
	b := startEtcdAgent(t, c.Endpoints()[2:], "/compact/", keys) // member 2 only
	uid := freeUID(t)
	a.aliceWorkload(uid)
	a.cli("project", "env", "set", "p", "V", "0")
	b.waitEnv(uid, "V", ptr("0"))

	c.Members[2].Kill()
	// Member 2 may have been the leader: a write sent before the others
	// elect a new one may time out (BACKEND_UNAVAILABLE, as documented).
	if err := c.WaitHealthy(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 20; i++ {
		a.cli("project", "env", "set", "p", "V", fmt.Sprint(i))
	}
	if _, err := c.Etcdctl("compact", fmt.Sprint(a.revision())); err != nil {
		t.Fatal(err)
	}
	if err := c.Members[2].Start(); err != nil {
		t.Fatal(err)
	}
	b.waitEnv(uid, "V", ptr("20"))
	b.waitLog("re-reading the whole store", 1)
	eventually(t, "the same revision on both", func() bool { return a.revision() == b.revision() })
}

// TestEtcdKeyRotation: a new key goes to every node's key ring as a
// secondary, becomes primary, and every record is re-encrypted under it,
// while workloads on both nodes are served without a failure; the old key
// is then removed. A node whose ring lacks the new key refuses to serve
// (KEY_MISSING) rather than serve environments missing variables.
func TestEtcdKeyRotation(t *testing.T) {
	c := sharedE2EEtcd(t)
	ringA := newKeyRing(t)
	ringB := filepath.Join(filepath.Dir(ringA), "keyring-b")
	copyKeyRing(t, ringA, ringB)
	oldRing := filepath.Join(filepath.Dir(ringA), "keyring-old")
	copyKeyRing(t, ringA, oldRing)
	prefix := uniquePrefix()
	eps := strings.Join(c.Endpoints(), ",")
	a := startEtcdAgent(t, c.Endpoints(), prefix, ringA)
	b := startEtcdAgent(t, c.Endpoints(), prefix, ringB)
	uid := freeUID(t)
	a.aliceWorkload(uid)
	a.cli("project", "env", "set", "p", "PV", "pv")
	a.cli("env", "set", "--user", "alice", "ACCT", "acct")
	b.waitEnv(uid, "ACCT", ptr("acct"))

	// Workloads are served on both nodes all along.
	stop := make(chan struct{})
	var served, failed atomic.Int64
	var firstFailure atomic.Value
	var wg sync.WaitGroup
	var stopOnce sync.Once
	stopReaders := func() { stopOnce.Do(func() { close(stop) }); wg.Wait() }
	defer stopReaders()
	for _, n := range []*agentProc{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				env, r := n.launchEnv(uid, uid)
				if r.code != 0 || env["PV"] != "pv" || env["ACCT"] != "acct" {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, r.String())
				} else {
					served.Add(1)
				}
			}
		}()
	}
	key := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bins.envletd, append([]string{"key"}, args...)...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("envletd key %v: %v %s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	newID := key("add", "-key-file", ringA)
	copyKeyRing(t, ringA, ringB)
	a.waitLog(newID, 1) // reloaded: the new key is in the ring
	b.waitLog(newID, 1)
	key("promote", newID, "-key-file", ringA)
	copyKeyRing(t, ringA, ringB)
	a.waitLog("primary="+newID, 1)
	b.waitLog("primary="+newID, 1)
	out := key("reencrypt", "-key-file", ringA, "-etcd", eps, "-etcd-prefix", prefix)
	if !strings.Contains(out, "re-encrypted") {
		t.Fatalf("reencrypt: %s", out)
	}
	// Every value in etcd is under the new key.
	js, err := c.Etcdctl("get", "--prefix", prefix, "-w", "json")
	if err != nil {
		t.Fatal(err)
	}
	var dump struct {
		KVs []struct{ Key, Value string } `json:"kvs"`
	}
	if err := json.Unmarshal([]byte(js), &dump); err != nil || len(dump.KVs) == 0 {
		t.Fatalf("etcdctl json: %v", err)
	}
	for _, kv := range dump.KVs {
		k, _ := base64.StdEncoding.DecodeString(kv.Key)
		v, _ := base64.StdEncoding.DecodeString(kv.Value)
		if id, _ := fetch.SealedKeyID(v); id != newID {
			t.Fatalf("%s is sealed with %q after reencrypt, want %s", k, id, newID)
		}
	}
	// The old key goes.
	oldID := strings.Fields(key("list", "-key-file", ringA))[2]
	key("remove", oldID, "-key-file", ringA)
	copyKeyRing(t, ringA, ringB)
	a.waitLog("keys="+newID+"\n", 1) // reloaded: the new key alone
	b.waitLog("keys="+newID+"\n", 1)
	b.cli("env", "set", "--user", "alice", "AFTER", "after")
	a.waitEnv(uid, "AFTER", ptr("after"))
	stopReaders()
	if failed.Load() != 0 || served.Load() == 0 {
		t.Fatalf("during the rotation: %d served, %d failed; first failure: %v", served.Load(), failed.Load(), firstFailure.Load())
	}
	t.Logf("%d launches served during the rotation", served.Load())

	// A node with the old key ring only: loud refusal, not a partial env.
	cn := startEtcdAgent(t, c.Endpoints(), prefix, oldRing)
	cn.waitLog("not in the key ring", 1)
	r := cn.runAs(uid, uid, "", nil, bins.exec, "--", "env")
	if r.code != 125 || !strings.Contains(r.stderr, "KEY_MISSING") || !strings.Contains(r.stderr, newID) {
		t.Fatalf("a node without the new key served: %s", r)
	}
	if st := cn.statusMap(); st["missing_keys"] != newID {
		t.Fatalf("status of a node without the new key: %v", st)
	}
	copyKeyRing(t, ringA, oldRing)
	cn.waitEnv(uid, "AFTER", ptr("after"))
	if st := cn.statusMap(); st["missing_keys"] != nil {
		t.Fatalf("missing_keys after the ring arrived: %v", st)
	}
}

// --- benchmarks (make bench-etcd) ---

// adminPut sets project p's variable name through the agent's admin API.
func adminPut(hc *http.Client, name, value string) error {
	body, _ := json.Marshal(map[string]string{"value": value})
	req, _ := http.NewRequest(http.MethodPut, "http://envlet/v1/projects/p/env/"+name, bytes.NewReader(body))
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("PUT: %s", resp.Status)
	}
	return nil
}

func unixHTTP(sock string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
}

// getEnv asks the workload socket for this process's environment, as the
// launcher does, and returns name's value.
func getEnv(sock, name string, buf []byte) (string, error) {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if _, err := c.Write(wire.AppendRequest(nil, wire.Request{Type: wire.TypeGetEnv})); err != nil {
		return "", err
	}
	typ, payload, err := wire.ReadFrame(c, buf)
	if err != nil {
		return "", err
	}
	if typ != wire.TypeEnv {
		code, msg, _ := wire.DecodeError(payload)
		return "", fmt.Errorf("%s: %s", code, msg)
	}
	_, entries, err := wire.DecodeEnv(payload)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		if e.Name == name {
			return string(e.Value), nil
		}
	}
	return "", nil
}

// devEtcdAgent starts `envletd -dev` on etcd for a benchmark; it returns
// the admin and workload sockets and a stop function.
func devEtcdAgent(b *testing.B, endpoints []string, prefix, keyFile string) (admin, work string, stop func()) {
	b.Helper()
	dir, err := os.MkdirTemp("", "elbe")
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bins.envletd, "-dev", "-dir", dir, "-etcd", strings.Join(endpoints, ","), "-etcd-prefix", prefix, "-key-file", keyFile, "-log-level", "warn")
	logs := newLogBuf()
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	stop = func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait(); os.RemoveAll(dir) }
	for limit := time.Now().Add(30 * time.Second); !strings.Contains(logs.String(), "ENVLET_ADMIN_SOCKET"); {
		if time.Now().After(limit) {
			stop()
			b.Fatalf("the agent did not start:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond) // polling its output
	}
	return filepath.Join(dir, "admin.sock"), filepath.Join(dir, "workload.sock"), stop
}

// BenchmarkEtcdPropagation: a write through agent A's admin API until agent
// B serves the new value to a workload (GetEnv on B's workload socket, as
// the launcher asks), over 1,000 writes on one etcd member; then the reads
// B serves per second with etcd up and with etcd down.
//
//	go test -run '^$' -bench EtcdPropagation -benchtime 1x ./e2e/
func BenchmarkEtcdPropagation(b *testing.B) {
	c := etcdtest.Start(b, 1)
	keys := newKeyRing(b)
	adminA, _, stopA := devEtcdAgent(b, c.Endpoints(), "/bench/", keys)
	defer stopA()
	adminB, workB, stopB := devEtcdAgent(b, c.Endpoints(), "/bench/", keys)
	defer stopB()
	run := func(sock, stdin string, args ...string) string {
		cmd := exec.Command(bins.envlet, append([]string{"--socket", sock}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("envlet %s: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run(adminA, "", "project", "create", "p")
	run(adminA, "", "project", "add-member", "p", "benchuser")
	run(adminA, `{"id":"bench","user":"benchuser","project":"p","match":{"uid":0}}`, "workload", "register", "-")
	hc := unixHTTP(adminA)
	buf := make([]byte, 64<<10)
	const writes = 1000
	var prop, commit []time.Duration
	for n := 0; n < b.N; n++ {
		prop, commit = prop[:0], commit[:0]
		for i := 0; i < writes; i++ {
			v := fmt.Sprintf("v%d-%d", n, i)
			t0 := time.Now()
			if err := adminPut(hc, "V", v); err != nil {
				b.Fatal(err)
			}
			commit = append(commit, time.Since(t0))
			for {
				got, err := getEnv(workB, "V", buf)
				if err != nil && !strings.Contains(err.Error(), "WORKLOAD_UNKNOWN") {
					b.Fatal(err)
				}
				if got == v {
					break
				}
			}
			prop = append(prop, time.Since(t0))
		}
	}
	b.StopTimer()
	readRate := func(d time.Duration) float64 {
		var n atomic.Int64
		var wg sync.WaitGroup
		end := time.Now().Add(d)
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 64<<10)
				for time.Now().Before(end) {
					if _, err := getEnv(workB, "V", buf); err == nil {
						n.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		return float64(n.Load()) / d.Seconds()
	}
	up := readRate(2 * time.Second)
	c.Members[0].Kill()
	for !strings.Contains(run(adminB, "", "status"), "connected: false") {
		time.Sleep(50 * time.Millisecond) // polling the agent's probe
	}
	down := readRate(2 * time.Second)
	b.ReportMetric(float64(percentile(prop, 50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(percentile(prop, 99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(down, "reads/s-etcd-down")
	b.Logf("\n%-54s %9s %9s\n%-54s %9v %9v\n%-54s %9v %9v\n%-54s %9.0f\n%-54s %9.0f   ratio down/up %.2f",
		fmt.Sprintf("over %d writes, one etcd member", writes), "p50", "p99",
		"write on A (admin PUT: committed, applied on A)", percentile(commit, 50).Round(time.Microsecond), percentile(commit, 99).Round(time.Microsecond),
		"write on A -> new value served by B (propagation)", percentile(prop, 50).Round(time.Microsecond), percentile(prop, 99).Round(time.Microsecond),
		"B serves GetEnv, 4 clients, etcd up (reads/s)", up,
		"B serves GetEnv, 4 clients, etcd down (reads/s)", down, down/up)
}

// TestKeyRotateLocal: `envletd key rotate` on a stopped agent's store (the
// local store, or etcd in the etcd pass) puts a new primary first and
// re-encrypts every record; the old key can then go.
func TestKeyRotateLocal(t *testing.T) {
	a := startAgent(t, "PATH = /usr/bin:/bin")
	uid := freeUID(t)
	a.aliceWorkload(uid)
	a.cli("env", "set", "--user", "alice", "ACCT", "acct")
	a.stop()
	key := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bins.envletd, append([]string{"key"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("envletd key %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	oldID := strings.Fields(key("list", "-config", a.config))[0]
	out := key("rotate", "-config", a.config)
	if !strings.Contains(out, "new primary key") || !strings.Contains(out, "re-encrypted") {
		t.Fatalf("rotate: %s", out)
	}
	if ids := strings.Fields(key("list", "-config", a.config)); len(ids) != 4 || ids[2] != oldID || ids[1] != "primary" {
		t.Fatalf("key list after rotate: %v", ids)
	}
	key("remove", oldID, "-config", a.config)
	if r := a.runAs(0, 0, "", nil, bins.envletd, "key", "remove", "nope", "-config", a.config); r.code != 1 {
		t.Fatalf("remove of an unknown key: %s", r)
	}
	a.start()
	a.waitEnv(uid, "ACCT", ptr("acct"))
}
