package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/envlet/envlet/bench/internal/gen"
	"github.com/envlet/envlet/fetch"
	"github.com/envlet/envlet/internal/etcdtest"
)

// The organization of issue 18 goal 5, at scale 1: 10,000 users × 64
// account variables, 1,000 projects × 20 variables, 100 groups × 50
// variables, 20,000 secrets (20 per project: a user's own secrets only its uid may write).
const (
	orgUsers, orgUserVars     = 10000, 64
	orgProjects, orgProjVars  = 1000, 20
	orgGroups, orgGroupVars   = 100, 50
	orgSecretsPerProject      = 20
	orgWorkloads              = 1000 // registered on the measured node
	orgTxnOps                 = 128  // etcd's default --max-txn-ops
	orgLoaders                = 8
	orgPrefix, orgEmptyPrefix = "/org/", "/empty/"
)

// orgRecord is one record to load: its key under the prefix and its sealed
// value.
type orgRecord struct {
	key   string
	value []byte
}

// etcdorg measures one agent on a whole organization in a real etcd: start
// to READY against `etcdctl get --prefix` of the same prefix (first start:
// a whole read; restart: the catch-up from its snapshot file), resident
// memory, and one change's round trip (admin PUT, which returns once the
// change came back through etcd's watch into the agent's model, from which
// every request resolves) against the same on an empty store.
//
// The records are made by the agent's own code: a template agent writes one
// record of each kind through the admin API, and the bench reseals copies
// of them under the generated names with the agent's key ring (the values
// are bound to their keys), then loads them with etcd's client in
// transactions of 128 puts, 8 at a time: etcd's bulk path, not the API.
func (r *runner) etcdorg() error {
	etcdBin, err := etcdtest.Binary()
	if err != nil {
		return err
	}
	etcdctl, err := exec.LookPath("etcdctl")
	if err != nil {
		return err
	}
	cluster, err := etcdtest.StartDir(etcdBin, filepath.Join(r.work, "etcd"), 1)
	if err != nil {
		return err
	}
	defer cluster.Stop()
	ep := strings.Join(cluster.Endpoints(), ",")
	envletd := bin(r.o.bin, "envletd")
	scale := r.o.orgScale
	users, projects, groups := max(1, int(orgUsers*scale)), max(1, int(orgProjects*scale)), max(1, int(orgGroups*scale))

	// One record of each kind, written by the agent.
	tdir := filepath.Join(r.work, "orgtmpl")
	t, err := startAgentArgs(envletd, tdir, "-etcd", ep, "-etcd-prefix", "/tmpl/")
	if err != nil {
		return err
	}
	val := gen.Vars(0, 1)[gen.Name(0)]
	steps := []struct {
		method, path string
		body         any
	}{
		{"PUT", "/v1/users/u00000/env/" + gen.Name(0), map[string]string{"value": val}},
		{"POST", "/v1/projects", map[string]string{"name": "p0000"}},
		{"PUT", "/v1/projects/p0000/secrets/S000", map[string]string{"value": val}},
		{"PUT", "/v1/projects/p0000/env/" + gen.Name(0), map[string]string{"value": val}},
		{"POST", "/v1/groups", map[string]string{"name": "g000"}},
		{"PUT", "/v1/groups/g000/env/" + gen.Name(0), map[string]string{"value": val}},
	}
	for _, s := range steps {
		if err := t.call(s.method, s.path, s.body, nil); err != nil {
			t.stop()
			return fmt.Errorf("template: %w", err)
		}
	}
	t.stop()
	keys, err := fetch.LoadKeyring(filepath.Join(tdir, "keyring"), false)
	if err != nil {
		return err
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: cluster.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx := context.Background()
	resp, err := cli.Get(ctx, "/tmpl/", clientv3.WithPrefix())
	if err != nil {
		return err
	}
	tmpl := map[string][]byte{} // key under the prefix -> opened payload
	for _, kv := range resp.Kvs {
		k := strings.TrimPrefix(string(kv.Key), "/tmpl/")
		p, err := keys.Open(nil, kv.Value, k)
		if err != nil {
			return fmt.Errorf("template record %s does not open with its key as AAD: %w", k, err)
		}
		tmpl[k] = p
	}
	// A copy of template key k under new names: names replaced in the key
	// and the payload, the generated value put in place of the template's.
	var recs []orgRecord
	add := func(k string, names []string, newVal string) error {
		p, ok := tmpl[k]
		if !ok {
			return fmt.Errorf("no template record %s (have %v)", k, mapKeys(tmpl))
		}
		for i := 0; i+1 < len(names); i += 2 {
			k = strings.ReplaceAll(k, names[i], names[i+1])
			p = bytes.ReplaceAll(p, []byte(names[i]), []byte(names[i+1]))
		}
		if newVal != "" {
			p = bytes.Replace(p, []byte(val), []byte(newVal), 1)
		}
		recs = append(recs, orgRecord{key: k, value: keys.Seal(nil, p, k)})
		return nil
	}
	for k := range tmpl {
		var err error
		switch {
		case strings.HasPrefix(k, "u/u00000/v/"):
			for u := range users {
				vars := gen.Vars(u, orgUserVars)
				for v := range orgUserVars {
					if err = add(k, []string{"u00000", fmt.Sprintf("u%05d", u), gen.Name(0), gen.Name(v)}, vars[gen.Name(v)]); err != nil {
						return err
					}
				}
			}
		case strings.HasPrefix(k, "s/p/p0000/"):
			for p := range projects {
				for s := range orgSecretsPerProject {
					err = add(k, []string{"p0000", fmt.Sprintf("p%04d", p), "S000", fmt.Sprintf("S%03d", s)}, gen.Vars(p+s, 1)[gen.Name(0)])
				}
			}
		case strings.HasPrefix(k, "p/p0000/v/"):
			for p := range projects {
				vars := gen.Vars(p, orgProjVars)
				for v := range orgProjVars {
					err = add(k, []string{"p0000", fmt.Sprintf("p%04d", p), gen.Name(0), gen.Name(v)}, vars[gen.Name(v)])
				}
			}
		case strings.HasPrefix(k, "g/g000/v/"):
			for g := range groups {
				vars := gen.Vars(g, orgGroupVars)
				for v := range orgGroupVars {
					err = add(k, []string{"g000", fmt.Sprintf("g%03d", g), gen.Name(0), gen.Name(v)}, vars[gen.Name(v)])
				}
			}
		case strings.HasPrefix(k, "u/u00000/"):
			for u := range users {
				err = add(k, []string{"u00000", fmt.Sprintf("u%05d", u)}, "")
			}
		case strings.HasPrefix(k, "p/p0000/"):
			for p := range projects {
				err = add(k, []string{"p0000", fmt.Sprintf("p%04d", p)}, "")
			}
		case strings.HasPrefix(k, "g/g000/"):
			for g := range groups {
				err = add(k, []string{"g000", fmt.Sprintf("g%03d", g)}, "")
			}
		default:
			err = add(k, nil, "") // anything else the agent keeps once
		}
		if err != nil {
			return err
		}
	}
	loadStart := time.Now()
	if err := orgLoad(ctx, cli, orgPrefix, recs); err != nil {
		return err
	}
	loadTime := time.Since(loadStart)
	var bytesTotal int64
	for _, rec := range recs {
		bytesTotal += int64(len(orgPrefix) + len(rec.key) + len(rec.value))
	}
	logf("etcdorg: loaded %d records (%s) in %s", len(recs), mib(bytesTotal), ms(loadTime))

	// The floor: etcdctl reading the whole prefix.
	var getTimes []time.Duration
	for range 3 {
		t0 := time.Now()
		cmd := exec.Command(etcdctl, "--endpoints", ep, "--command-timeout", "10m", "get", "--prefix", orgPrefix)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("etcdctl get: %w: %s", err, stderr.String())
		}
		getTimes = append(getTimes, time.Since(t0))
	}
	getMed := median(getTimes)

	// The measured node: its key ring, workloads of the org's users.
	adir := filepath.Join(r.work, "orgnode")
	os.MkdirAll(adir, 0o755)
	ring, err := os.ReadFile(filepath.Join(tdir, "keyring"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(adir, "keyring"), ring, 0o600); err != nil {
		return err
	}
	nw := min(orgWorkloads, users)
	if err := writeWorkloads(adir, nw, 0, func(i int) string { return fmt.Sprintf("p%04d", i%projects) }, false); err != nil {
		return err
	}
	args := []string{"-etcd", ep, "-etcd-prefix", orgPrefix}
	a, err := startAgentArgs(envletd, adir, args...)
	if err != nil {
		return err
	}
	first := a.ready
	st, _ := procStatus(a.pid())
	a.stop()
	var restarts []time.Duration
	var rss int64
	var a2 *agentProc
	for i := range 3 {
		if a2, err = startAgentArgs(envletd, adir, args...); err != nil {
			return err
		}
		restarts = append(restarts, a2.ready)
		if i < 2 {
			a2.stop()
		}
	}
	defer a2.stop()
	st2, _ := procStatus(a2.pid())
	rss = max(st["VmRSS"], st2["VmRSS"])
	// One change on the org store, against the same on an empty store.
	change := func(ag *agentProc, project string) ([]time.Duration, error) {
		var d []time.Duration
		for i := range r.o.fanReps {
			t0 := time.Now()
			if err := ag.call("PUT", "/v1/projects/"+project+"/env/BENCH_CHANGE", map[string]string{"value": fmt.Sprintf("v%d", i)}, nil); err != nil {
				return nil, err
			}
			d = append(d, time.Since(t0))
		}
		sortDurations(d)
		return d, nil
	}
	orgCh, err := change(a2, "p0000")
	if err != nil {
		return err
	}
	edir := filepath.Join(r.work, "orgempty")
	os.MkdirAll(edir, 0o755)
	os.WriteFile(filepath.Join(edir, "keyring"), ring, 0o600)
	e, err := startAgentArgs(envletd, edir, "-etcd", ep, "-etcd-prefix", orgEmptyPrefix)
	if err != nil {
		return err
	}
	defer e.stop()
	if err := e.call("POST", "/v1/projects", map[string]string{"name": "p0000"}, nil); err != nil {
		return err
	}
	emptyCh, err := change(e, "p0000")
	if err != nil {
		return err
	}

	var b strings.Builder
	b.WriteString("## A whole organization in etcd\n\n")
	fmt.Fprintf(&b, "%s records (%s) in a real etcd (Debian's etcd-server, one member on this machine) under `%s`: %s users × %d account variables, %s projects × %d variables, %s groups × %d variables, %s project secrets, with the index and metadata records the agent keeps. ",
		thousands(int64(len(recs))), mib(bytesTotal), orgPrefix, thousands(int64(users)), orgUserVars, thousands(int64(projects)), orgProjVars, thousands(int64(groups)), orgGroupVars, thousands(int64(projects*orgSecretsPerProject)))
	fmt.Fprintf(&b, "Made by the agent's own code (one record of each kind written through the admin API by a template agent, copies resealed under the generated names with its key ring) and loaded with etcd's client in transactions of %d puts, %d at a time (%s). ", orgTxnOps, orgLoaders, ms(loadTime))
	fmt.Fprintf(&b, "The measured node has %s workloads (of the org's users and projects) in workloads.d.\n\n", thousands(int64(nw)))
	fmt.Fprintf(&b, "Re-run: `make bench-etcd-org` (scale: `BENCHFLAGS='-org-scale 0.1'`); the floor by hand: `time etcdctl --endpoints URL --command-timeout 10m get --prefix %s >/dev/null`.\n\n", orgPrefix)
	b.WriteString("| what | figure | baseline | ratio |\n|---|---|---|---|\n")
	fmt.Fprintf(&b, "| first start to READY (no snapshot file: a whole read) | %s | `etcdctl get --prefix` %s (median of 3) | %s |\n", ms(first), ms(getMed), ratio(float64(first), float64(getMed)))
	var all []string
	for _, d := range restarts {
		all = append(all, ms(d))
	}
	fmt.Fprintf(&b, "| restart to READY (catch-up from the snapshot file) | %s (%s) | `etcdctl get --prefix` %s | %s |\n", ms(median(restarts)), strings.Join(all, ", "), ms(getMed), ratio(float64(median(restarts)), float64(getMed)))
	fmt.Fprintf(&b, "| resident memory after READY (VmRSS, the larger of first start and restart) | %s | goal 256 MiB | %s |\n", mib(rss), ratio(float64(rss), 256<<20))
	fmt.Fprintf(&b, "| one change, admin PUT to the agent's model (median of %d; p90 %s) | %s | the same on an empty store: %s (p90 %s) | %s |\n",
		len(orgCh), ms(percentile(orgCh, 90)), ms(median(orgCh)), ms(median(emptyCh)), ms(percentile(emptyCh, 90)), ratio(float64(median(orgCh)), float64(median(emptyCh))))
	b.WriteString("\nWhat the agent holds that its node's workloads never use: the whole prefix, every user's account variables and secrets and every project and group, ")
	fmt.Fprintf(&b, "sealed as stored (the mirror's copy for the snapshot file, and the model), though its %s workloads reach %s users and their projects. ", thousands(int64(nw)), thousands(int64(nw)))
	b.WriteString("It holds them so that any workload that registers later resolves without a read, and so that the snapshot file can serve when etcd is away; a node-scoped read (only the users and projects its workloads name) would cut memory and start time to the node's share, at the cost of a read per new user.\n")
	r.rep.section(b.String())
	r.rep.goal(goalRow{what: "org in etcd: first start to READY", figure: ms(first), against: "etcdctl get --prefix " + ms(getMed), ratio: ratio(float64(first), float64(getMed)), goal: "≤ 2×", met: met(first <= 2*getMed)})
	r.rep.goal(goalRow{what: "org in etcd: restart to READY (catch-up)", figure: ms(median(restarts)), against: "etcdctl get --prefix " + ms(getMed), ratio: ratio(float64(median(restarts)), float64(getMed)), goal: "≤ 2×", met: met(median(restarts) <= 2*getMed)})
	r.rep.goal(goalRow{what: "org in etcd: resident memory", figure: mib(rss), against: "256 MiB", ratio: ratio(float64(rss), 256<<20), goal: "< 256 MiB", met: met(rss < 256<<20)})
	r.rep.goal(goalRow{what: "org in etcd: one change to the model", figure: ms(median(orgCh)), against: "empty store " + ms(median(emptyCh)), ratio: ratio(float64(median(orgCh)), float64(median(emptyCh))), goal: "as fast (≤ 1.25×)", met: met(float64(median(orgCh)) <= 1.25*float64(median(emptyCh)))})
	return nil
}

// orgLoad puts recs under prefix in transactions of orgTxnOps puts,
// orgLoaders at a time.
func orgLoad(ctx context.Context, cli *clientv3.Client, prefix string, recs []orgRecord) error {
	work := make(chan []orgRecord)
	errs := make(chan error, orgLoaders)
	var wg sync.WaitGroup
	for range orgLoaders {
		wg.Go(func() {
			for chunk := range work {
				ops := make([]clientv3.Op, 0, len(chunk))
				for _, rec := range chunk {
					ops = append(ops, clientv3.OpPut(prefix+rec.key, string(rec.value)))
				}
				if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var err error
	for i := 0; i < len(recs) && err == nil; i += orgTxnOps {
		select {
		case work <- recs[i:min(i+orgTxnOps, len(recs))]:
		case err = <-errs:
		}
	}
	close(work)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return err
}

func mapKeys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
