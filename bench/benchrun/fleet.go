package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/envlet/envlet/internal/etcdtest"
)

// etcdfleet measures many nodes on one etcd cluster: a 3-member cluster
// and r.o.fleetAgents agents on this machine, each with r.o.fleetWorkloads
// workloads of one project in one group. A change of the group's variable,
// written through one agent, is timed until every agent's model holds it
// (every workload's next request resolves from the model), against etcd's
// own put→watch latency with as many watchers, measured in the same run.
// The etcd traffic per change (bytes etcd sent to its clients, from its
// metrics) is counted with the workloads per agent at a tenth and at
// full, to show it does not grow with them.
func (r *runner) etcdfleet() error {
	etcdBin, err := etcdtest.Binary()
	if err != nil {
		return err
	}
	cluster, err := etcdtest.StartDir(etcdBin, filepath.Join(r.work, "fleet-etcd"), 3)
	if err != nil {
		return err
	}
	defer cluster.Stop()
	ep := strings.Join(cluster.Endpoints(), ",")
	envletd := bin(r.o.bin, "envletd")
	n := r.o.fleetAgents
	startFleet := func(workloads int) ([]*agentProc, error) {
		var agents []*agentProc
		for i := range n {
			dir := filepath.Join(r.work, fmt.Sprintf("fleet%02d", i))
			os.RemoveAll(filepath.Join(dir, "workloads.d"))
			if i > 0 {
				// One key ring for the fleet, as nodes of one org share it.
				ring, err := os.ReadFile(filepath.Join(r.work, "fleet00", "keyring"))
				if err != nil {
					return agents, err
				}
				os.MkdirAll(dir, 0o755)
				os.WriteFile(filepath.Join(dir, "keyring"), ring, 0o600)
			}
			if err := writeWorkloads(dir, workloads, 0, func(int) string { return "fleetp" }, false); err != nil {
				return agents, err
			}
			a, err := startAgentArgs(envletd, dir, "-etcd", ep, "-etcd-prefix", "/fleet/")
			if err != nil {
				return agents, err
			}
			agents = append(agents, a)
		}
		return agents, nil
	}
	stopFleet := func(agents []*agentProc) {
		for _, a := range agents {
			a.stop()
		}
	}
	// The org: one project in one group. The first agent creates them
	// (before the others start, so they need no key ring of their own yet).
	first, err := startAgentArgs(envletd, filepath.Join(r.work, "fleet00"), "-etcd", ep, "-etcd-prefix", "/fleet/")
	if err != nil {
		return err
	}
	for _, s := range []struct {
		method, path string
		body         any
	}{
		{"POST", "/v1/projects", map[string]string{"name": "fleetp"}},
		{"POST", "/v1/groups", map[string]string{"name": "fleetg"}},
		{"PUT", "/v1/groups/fleetg/env/FLEET", map[string]string{"value": "0"}},
		{"PUT", "/v1/projects/fleetp/groups", map[string][]string{"groups": {"fleetg"}}},
	} {
		if err := first.call(s.method, s.path, s.body, nil); err != nil {
			first.stop()
			return err
		}
	}
	first.stop()

	// change writes the group variable through agents[0] and waits until
	// every agent's model is at its revision: the time until the last.
	change := func(agents []*agentProc, i int) (time.Duration, error) {
		var out struct {
			Revision int64 `json:"revision"`
		}
		t0 := time.Now()
		if err := agents[0].call("PUT", "/v1/groups/fleetg/env/FLEET", map[string]string{"value": strconv.Itoa(i)}, &out); err != nil {
			return 0, err
		}
		s0, err := agents[0].status()
		if err != nil {
			return 0, err
		}
		rev := s0.Revision
		var wg sync.WaitGroup
		errs := make(chan error, len(agents))
		for _, a := range agents {
			wg.Go(func() {
				for {
					s, err := a.status()
					if err != nil {
						errs <- err
						return
					}
					if s.Revision >= rev {
						return
					}
					time.Sleep(200 * time.Microsecond)
				}
			})
		}
		wg.Wait()
		d := time.Since(t0)
		select {
		case err := <-errs:
			return 0, err
		default:
		}
		return d, nil
	}
	sentBytes := func() (float64, error) {
		var total float64
		for _, m := range cluster.Members {
			resp, err := http.Get(m.ClientURL + "/metrics")
			if err != nil {
				return 0, err
			}
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if v, ok := strings.CutPrefix(sc.Text(), "etcd_network_client_grpc_sent_bytes_total "); ok {
					f, _ := strconv.ParseFloat(v, 64)
					total += f
				}
			}
			resp.Body.Close()
		}
		return total, nil
	}
	reps := r.o.fleetReps
	series := func(workloads int) ([]time.Duration, float64, error) {
		agents, err := startFleet(workloads)
		defer stopFleet(agents)
		if err != nil {
			return nil, 0, err
		}
		change(agents, -1) // warm-up
		b0, err := sentBytes()
		if err != nil {
			return nil, 0, err
		}
		var d []time.Duration
		for i := range reps {
			x, err := change(agents, i)
			if err != nil {
				return nil, 0, err
			}
			d = append(d, x)
		}
		b1, _ := sentBytes()
		sortDurations(d)
		// The status polls go to the agents, not etcd; etcd's own probes
		// and the agents' health probes are in the count too (the same
		// at both sizes).
		return d, (b1 - b0) / float64(reps), nil
	}
	small := max(1, r.o.fleetWorkloads/10)
	_, perSmall, err := series(small)
	if err != nil {
		return err
	}
	fleetD, perFull, err := series(r.o.fleetWorkloads)
	if err != nil {
		return err
	}
	// etcd's own put→watch: n watchers on a prefix, the time from a put
	// until the last of them has the event.
	cli, err := clientv3.New(clientv3.Config{Endpoints: cluster.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var watchers []clientv3.WatchChan
	for range n {
		w, err := clientv3.New(clientv3.Config{Endpoints: cluster.Endpoints(), DialTimeout: 5 * time.Second})
		if err != nil {
			return err
		}
		defer w.Close()
		watchers = append(watchers, w.Watch(ctx, "/fleetraw/", clientv3.WithPrefix()))
	}
	var etcdD []time.Duration
	for i := range reps {
		t0 := time.Now()
		if _, err := cli.Put(ctx, "/fleetraw/k", strconv.Itoa(i)); err != nil {
			return err
		}
		for _, w := range watchers {
			<-w
		}
		etcdD = append(etcdD, time.Since(t0))
	}
	sortDurations(etcdD)
	p99, e99 := percentile(fleetD, 99), percentile(etcdD, 99)

	var b strings.Builder
	b.WriteString("## Many nodes\n\n")
	fmt.Fprintf(&b, "A 3-member etcd cluster (Debian's etcd-server) and %d agents on this machine, each with %s workloads of one project in one group (workloads.d). ", n, thousands(int64(r.o.fleetWorkloads)))
	fmt.Fprintf(&b, "A change of the group's variable is written through one agent's admin API and timed until every agent's model is at its revision (polled through `/v1/status`; every workload's next request resolves from the model): %d changes. ", reps)
	fmt.Fprintf(&b, "The baseline is etcd's own put→watch: a put and %d plain etcd watchers, timed until the last has the event, %d times, in the same run.\n\n", n, reps)
	b.WriteString("Re-run: `make bench-etcd-fleet` (smaller: `BENCHFLAGS='-fleet-agents 4 -fleet-workloads 200'`).\n\n")
	b.WriteString("| what | p50 | p99 | vs etcd put→watch p99 |\n|---|---|---|---|\n")
	fmt.Fprintf(&b, "| group change → every agent (%d × %s workloads) | %s | %s | %s |\n", n, thousands(int64(r.o.fleetWorkloads)), ms(median(fleetD)), ms(p99), ratio(float64(p99), float64(e99)))
	fmt.Fprintf(&b, "| etcd put → %d watchers | %s | %s | 1.00× |\n\n", n, ms(median(etcdD)), ms(e99))
	fmt.Fprintf(&b, "etcd traffic per change (bytes etcd sent to its clients, all members, from `etcd_network_client_grpc_sent_bytes_total`): %s bytes with %s workloads per agent, %s with %s: %s. ",
		thousands(int64(perSmall)), thousands(int64(small)), thousands(int64(perFull)), thousands(int64(r.o.fleetWorkloads)), ratio(perFull, perSmall))
	b.WriteString("Each agent holds one watch on the prefix, whatever its workloads: a change costs etcd one event per agent.\n\n")
	b.WriteString("The figure includes the admin API's own round trip (the PUT returns once the writing agent's model has the change) and the status polls; the baseline is a bare put and bare watchers. ")
	b.WriteString("A restarted agent catches up from its snapshot file (fetch/catchup.go): it replays etcd's history since the file's revision (a watch up to etcd's revision), and reads the whole prefix only when etcd has compacted past it (TestMirrorRestartCatchesUp; the restart row of the organization section times it).\n")
	r.rep.section(b.String())
	r.rep.goal(goalRow{what: fmt.Sprintf("fleet: group change to %d agents, p99", n), figure: ms(p99), against: "etcd put→watch p99 " + ms(e99), ratio: ratio(float64(p99), float64(e99)), goal: "≤ 2×", met: met(p99 <= 2*e99)})
	r.rep.goal(goalRow{what: "fleet: etcd bytes per change, full vs a tenth of the workloads", figure: thousands(int64(perFull)), against: thousands(int64(perSmall)), ratio: ratio(perFull, perSmall), goal: "does not grow (≤ 1.25×)", met: met(perFull <= 1.25*perSmall)})
	return nil
}
