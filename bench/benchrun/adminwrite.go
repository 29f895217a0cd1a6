package main

import (
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// adminWriters are the concurrencies the adminwrite section measures.
var adminWriters = []int{1, 8, 64}

// adminConns is the most admin connections the writers open at once.
const adminConns = 30

// adminwrite measures durable writes per second through the admin socket
// on the local store (PUT of an account variable, each acknowledged once
// on disk), with 1, 8 and 64 concurrent writers, against the floor: one
// append plus fdatasync per write from one writer (bench/syncfloor, on the
// same file system, in the same run, timed just before and just after).
func (r *runner) adminwrite() error {
	dir := filepath.Join(r.work, "adminwrite")
	a, err := startAgent(bin(r.o.bin, "envletd"), dir)
	if err != nil {
		return err
	}
	defer a.stop()
	// The agent admits 32 admin connections per uid (max_conns_per_uid;
	// -dev takes no config), and every writer here is root: 64 writers
	// share at most adminConns connections, so at most that many writes
	// are in flight at once; the rest wait in the client.
	w := *a
	tr := a.client.Transport.(*http.Transport).Clone()
	tr.MaxConnsPerHost, tr.MaxIdleConnsPerHost = adminConns, adminConns
	w.client = &http.Client{Timeout: a.client.Timeout, Transport: tr}
	a = &w
	floorRun := func() (float64, error) {
		out, err := exec.Command(bin(r.o.benchBin, "syncfloor"), "-dir", dir, "-duration", r.o.loadDur.String()).Output()
		if err != nil {
			return 0, fmt.Errorf("syncfloor: %w", err)
		}
		var n int
		var s float64
		if _, err := fmt.Sscanf(string(out), "writes %d seconds %f", &n, &s); err != nil {
			return 0, fmt.Errorf("syncfloor said %q", out)
		}
		return float64(n) / s, nil
	}
	before, err := floorRun()
	if err != nil {
		return err
	}
	rates := map[int]float64{}
	cpuPer := map[int]float64{} // agent CPU seconds per write
	for _, w := range adminWriters {
		cpu0, _ := procCPU(a.pid())
		var ok, failed atomic.Int64
		var firstErr atomic.Value
		stop := time.Now().Add(r.o.loadDur)
		var wg sync.WaitGroup
		for g := range w {
			wg.Go(func() {
				// Each writer its own user: the writes do not conflict, as
				// those of different admins or CI jobs mostly do not.
				user := fmt.Sprintf("aw%02d", g)
				for i := 0; time.Now().Before(stop); i++ {
					err := a.call("PUT", fmt.Sprintf("/v1/users/%s/env/V%d", user, i%8), map[string]string{"value": fmt.Sprintf("value %d of writer %d", i, g)}, nil)
					if err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
						continue
					}
					ok.Add(1)
				}
			})
		}
		t0 := time.Now()
		wg.Wait()
		el := time.Since(t0).Seconds()
		if f := failed.Load(); f > 0 {
			return fmt.Errorf("%d writers: %d writes failed, the first: %v", w, f, firstErr.Load())
		}
		rates[w] = float64(ok.Load()) / el
		cpu1, _ := procCPU(a.pid())
		cpuPer[w] = (cpu1 - cpu0).Seconds() / float64(max(1, ok.Load()))
		logf("adminwrite %d writers: %.0f writes/s", w, rates[w])
	}
	after, err := floorRun()
	if err != nil {
		return err
	}
	floor := (before + after) / 2
	var b strings.Builder
	b.WriteString("## Admin writes\n\n")
	fmt.Fprintf(&b, "Durable writes per second through the admin socket on the local store: `PUT /v1/users/U/env/V` (an account variable; each writer its own user, so the writes do not conflict), each acknowledged only once it is on disk, for %s per row. The agent admits 32 admin connections per uid and every writer is root, so the 64 writers share %d connections (at most %d writes in flight). ", r.o.loadDur, adminConns, adminConns)
	b.WriteString("The floor is `bench/syncfloor`: one writer appending a 160-byte record and calling `fdatasync` per write, on the same file system, run just before and just after (the mean of the two). ")
	b.WriteString("With group commit (fetch/local.go), the Commits that arrive while a write is on its way to disk go to disk together, one record each, with one `fdatasync`.\n\n")
	b.WriteString("Re-run: `scripts/bench.sh -only adminwrite`; the floor by hand: `bin/bench/syncfloor -dir DIR -duration 3s`.\n\n")
	fmt.Fprintf(&b, "| writers | writes/s | vs the one-writer floor | agent CPU per write |\n|---|---|---|---|\n| floor (append + fdatasync, 1 writer) | %.0f (before %.0f, after %.0f) | 1.00× | — |\n", floor, before, after)
	for _, w := range adminWriters {
		fmt.Fprintf(&b, "| %d | %.0f | %s | %s |\n", w, rates[w], ratio(rates[w], floor), us(time.Duration(cpuPer[w]*1e9)))
	}
	fmt.Fprintf(&b, "\nThe agent's CPU per write (HTTP, JSON, sealing, the audit record, applying the change to the model) falls as groups grow, to %s at 64 writers: alone on both cores that would allow %.0f writes/s; here the writers (the bench's own HTTP clients) and other work share the cores, and the floor itself moves with the disk's load (its before and after figures).\n", us(time.Duration(cpuPer[64]*1e9)), 2/cpuPer[64])
	r.rep.section(b.String())
	r.rep.goal(goalRow{what: "admin writes, 1 writer (local store)", figure: fmt.Sprintf("%.0f/s", rates[1]), against: fmt.Sprintf("floor %.0f/s", floor), ratio: ratio(rates[1], floor), goal: "—"})
	r.rep.goal(goalRow{what: "admin writes, 64 writers (group commit)", figure: fmt.Sprintf("%.0f/s", rates[64]), against: fmt.Sprintf("floor %.0f/s", floor), ratio: ratio(rates[64], floor), goal: "well ahead of the floor (≥ 2×)", met: met(rates[64] >= 2*floor)})
	return nil
}
