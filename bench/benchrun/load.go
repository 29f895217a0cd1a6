package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/envlet/envlet/agent/wire"
	"github.com/envlet/envlet/bench/internal/gen"
)

// loadResult is what one loadworker process reports.
type loadResult struct {
	N        int     `json:"n"`
	Errors   int     `json:"errors"`
	ErrText  string  `json:"err_text,omitempty"`
	LatNanos []int64 `json:"lat"`
}

// loadWorker is `benchrun loadworker`: -conns goroutines each asking for its
// environment over a new connection, one request at a time, as envlet-exec
// does, from -begin (load starts, unix ns) to -end; requests wholly inside
// [-start, -end] are counted. It runs as the uid of the workload it plays.
func loadWorker(args []string) int {
	fs := flag.NewFlagSet("loadworker", flag.ContinueOnError)
	sock := fs.String("socket", "", "workload socket")
	conns := fs.Int("conns", 1, "concurrent clients")
	begin := fs.Int64("begin", 0, "unix ns: start sending")
	start := fs.Int64("start", 0, "unix ns: start counting")
	end := fs.Int64("end", 0, "unix ns: stop")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	total := drive(*sock, *conns, time.Unix(0, *begin), time.Unix(0, *start), time.Unix(0, *end))
	if err := json.NewEncoder(os.Stdout).Encode(total); err != nil {
		return 1
	}
	return 0
}

// drive runs conns clients against sock from begin to end and reports the
// requests made wholly inside [start, end].
func drive(sock string, conns int, beginT, startT, endT time.Time) loadResult {
	time.Sleep(time.Until(beginT))
	start, end := startT.UnixNano(), endT.UnixNano()
	req := wire.AppendRequest(nil, wire.Request{Type: wire.TypeGetEnv})
	addr := &net.UnixAddr{Name: sock, Net: "unix"}
	var mu sync.Mutex
	var total loadResult
	var wg sync.WaitGroup
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var res loadResult
			buf := make([]byte, 0, 64<<10)
			for {
				t0 := time.Now()
				if t0.UnixNano() >= end {
					break
				}
				err := getEnvOnce(addr, req, buf)
				t1 := time.Now()
				if t0.UnixNano() < start || t1.UnixNano() > end {
					continue
				}
				if err != nil {
					res.Errors++
					if res.ErrText == "" {
						res.ErrText = err.Error()
					}
					continue
				}
				res.N++
				res.LatNanos = append(res.LatNanos, int64(t1.Sub(t0)))
			}
			mu.Lock()
			total.N += res.N
			total.Errors += res.Errors
			if total.ErrText == "" {
				total.ErrText = res.ErrText
			}
			total.LatNanos = append(total.LatNanos, res.LatNanos...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return total
}

// getEnvOnce is one launcher exchange: connect, GetEnv, read the Env frame.
func getEnvOnce(addr *net.UnixAddr, req, buf []byte) error {
	c, err := net.DialUnix("unix", nil, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(req); err != nil {
		return err
	}
	t, payload, err := wire.ReadFrame(c, buf)
	if err != nil {
		return err
	}
	if t == wire.TypeError {
		code, msg, _ := wire.DecodeError(payload)
		return fmt.Errorf("%s: %s", code, msg)
	}
	if t != wire.TypeEnv {
		return fmt.Errorf("reply %s", t)
	}
	return nil
}

// loadCell is one measured cell: a server, a store size, a client count.
type loadCell struct {
	rps      float64
	p50, p99 time.Duration
	n, errs  int
	errText  string
	lat      []time.Duration // every request's latency, sorted
}

// runLoad drives sock with conns clients spread over worker processes, each
// running as the uid of one of the first `workloads` registrations (or as
// uidBase for the floor server, which does not care).
func (r *runner) runLoad(sock string, workloads, conns int, window func(start, end time.Time)) (loadCell, error) {
	// One process per uid, at most 64: the agent caps connections per uid
	// (max_conns_per_uid), and on a node each launcher is its own workload.
	procs := min(conns, 64)
	slack := 300*time.Millisecond + time.Duration(procs)*20*time.Millisecond
	warm := 500 * time.Millisecond
	begin := time.Now().Add(slack)
	start := begin.Add(warm)
	end := start.Add(r.o.loadDur)
	if window != nil {
		window(start, end)
	}
	type proc struct {
		cmd *exec.Cmd
		out bytes.Buffer
	}
	var ps []*proc
	for j := 0; j < procs; j++ {
		n := conns / procs
		if j < conns%procs {
			n++
		}
		uid := uidBase
		if workloads > 0 {
			uid = uidBase + j*workloads/procs
		}
		p := &proc{cmd: exec.Command(r.self, "loadworker", "-socket", sock, "-conns", strconv.Itoa(n),
			"-begin", strconv.FormatInt(begin.UnixNano(), 10), "-start", strconv.FormatInt(start.UnixNano(), 10), "-end", strconv.FormatInt(end.UnixNano(), 10))}
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
		p.cmd.Stdout = &p.out
		p.cmd.Stderr = os.Stderr
		p.cmd.Env = []string{"GOMAXPROCS=2"}
		if err := p.cmd.Start(); err != nil {
			for _, q := range ps {
				q.cmd.Process.Kill()
				q.cmd.Wait()
			}
			return loadCell{}, fmt.Errorf("start load worker: %w", err)
		}
		ps = append(ps, p)
	}
	var all []time.Duration
	var cell loadCell
	var firstErr error
	for _, p := range ps {
		if err := p.cmd.Wait(); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("load worker: %w", err)
		}
		var res loadResult
		if err := json.Unmarshal(p.out.Bytes(), &res); err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("load worker output: %w", err)
			}
			continue
		}
		cell.n += res.N
		cell.errs += res.Errors
		if cell.errText == "" {
			cell.errText = res.ErrText
		}
		for _, l := range res.LatNanos {
			all = append(all, time.Duration(l))
		}
	}
	if firstErr != nil {
		return cell, firstErr
	}
	sortDurations(all)
	cell.rps = float64(cell.n) / r.o.loadDur.Seconds()
	cell.p50, cell.p99 = percentile(all, 50), percentile(all, 99)
	cell.lat = all
	return cell, nil
}

// load measures environment requests per second and latency for 1, 64 and
// 512 concurrent clients, against the floor server and against agents
// holding 1,000 and 10,000 workloads of 64 variables.
func (r *runner) load() error {
	floor, err := r.startFloor(64)
	if err != nil {
		return err
	}
	defer r.stopFloor()
	a1, err := r.agent("load1k")
	if err != nil {
		return err
	}
	a10, err := r.agent("load10k")
	if err != nil {
		return err
	}
	servers := []struct {
		name      string
		sock      string
		workloads int
	}{
		{"floor server", floor, 0},
		{"envletd, 1,000 workloads", a1.sock, 1000},
		{"envletd, 10,000 workloads", a10.sock, 10000},
	}
	clients := []int{1, 64, 512}
	cells := map[string]map[int]loadCell{}
	var prof *profile
	profDone := make(chan struct{})
	for _, c := range clients {
		// Servers interleaved per client count, so drift in the machine's
		// other load hits them alike.
		for _, s := range servers {
			var window func(start, end time.Time)
			if s.workloads == 10000 && c == 64 {
				// Profile the agent through the middle of this cell.
				window = func(start, end time.Time) {
					go func() {
						defer close(profDone)
						time.Sleep(time.Until(start))
						pr := r.startPerf(a10.pid(), "load")
						time.Sleep(time.Until(end.Add(-200 * time.Millisecond)))
						prof = pr.stop()
					}()
				}
			}
			cell, err := r.runLoad(s.sock, s.workloads, c, window)
			if err != nil {
				return fmt.Errorf("%s, %d clients: %w", s.name, c, err)
			}
			cell.lat = nil // the percentiles are kept; only the metrics section pools samples
			if cells[s.name] == nil {
				cells[s.name] = map[int]loadCell{}
			}
			cells[s.name][c] = cell
			logf("load %-28s %3d clients: %8.0f req/s  p50 %s  p99 %s  errors %d %s", s.name, c, cell.rps, us(cell.p50), us(cell.p99), cell.errs, cell.errText)
		}
	}

	r.loaded = true
	<-profDone
	var b strings.Builder
	b.WriteString("## Agent under load\n\n")
	fmt.Fprintf(&b, "Environment requests (GetEnv, one new connection per request, as envlet-exec makes them) per second, and their latency from connect to the last byte of the reply, "+
		"with 1, 64 and 512 clients asking back to back for %s after a 0.5 s warm-up. ", r.o.loadDur)
	b.WriteString("Clients are goroutines in up to 64 worker processes (`benchrun loadworker`; 512 clients are 8 per process), each process running as the uid of a different registered workload ")
	b.WriteString("(SysProcAttr.Credential), since the agent tells workloads apart by SO_PEERCRED uid and each registration must match exactly one caller; ")
	fmt.Fprintf(&b, "so every request is matched against all 1,000 or 10,000 registrations. Each workload has 64 runtime variables of %d-byte values (a %s-byte Env frame with PATH). ", gen.ValueBytes, thousands(int64(len(gen.EnvFrame(0, 64, 1)))))
	b.WriteString("The floor is bench/floorserver: the same framing, peer credentials read, the same frame size, no matching, audit or copy. ")
	b.WriteString("Clients and server share the machine's cores, for the floor as for the agent.\n\n")
	b.WriteString("Re-run: `scripts/bench.sh -only load` (`-load-duration 10s` for longer cells).\n\n")
	b.WriteString("| server | clients | requests/s | vs floor | p50 | p99 | errors |\n|---|---|---|---|---|---|---|\n")
	for _, s := range servers {
		for _, c := range clients {
			x := cells[s.name][c]
			fl := cells["floor server"][c]
			vs := "—"
			if s.workloads > 0 {
				vs = fmt.Sprintf("%.0f%%", 100*x.rps/fl.rps)
			}
			errs := strconv.Itoa(x.errs)
			if x.errs > 0 {
				errs += " (" + x.errText + ")"
			}
			fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s |\n", s.name, c, thousands(int64(x.rps)), vs, us(x.p50), us(x.p99), errs)
		}
	}
	b.WriteString("\n")
	b.WriteString(prof.markdown("10,000 workloads, 64 clients"))
	r.rep.section(b.String())
	var missed []string
	for _, s := range servers[1:] {
		for _, c := range clients {
			x, fl := cells[s.name][c], cells["floor server"][c]
			ok := x.rps >= fl.rps/2 && x.errs == 0
			r.rep.goal(goalRow{
				what:   fmt.Sprintf("Requests/s, %s, %s", strings.TrimPrefix(s.name, "envletd, "), plural(c, "client")),
				figure: thousands(int64(x.rps)) + "/s, p99 " + us(x.p99), against: "floor " + thousands(int64(fl.rps)) + "/s",
				ratio: fmt.Sprintf("%.0f%%", 100*x.rps/fl.rps), goal: "≥ 50% of floor", met: met(ok),
			})
			if !ok {
				missed = append(missed, fmt.Sprintf("%s with %s: %.0f%% of the floor", s.name, plural(c, "client"), 100*x.rps/fl.rps))
			}
		}
	}
	var refused []string
	for _, s := range servers[1:] {
		for _, c := range clients {
			if x := cells[s.name][c]; x.errs > 0 {
				refused = append(refused, fmt.Sprintf("%s with %s: %d failed (first: `%s`)", s.name, plural(c, "client"), x.errs, x.errText))
			}
		}
	}
	if len(refused) > 0 {
		r.rep.note("Requests failed under load, where the floor server failed none: %s. A launcher that meets such a refusal retries for up to 2 s (ENVLET_RETRY), then exits 125 and its program does not start.", strings.Join(refused, "; "))
	}
	if len(missed) > 0 {
		r.rep.note("Throughput under half the floor's: %s. %s", strings.Join(missed, "; "),
			cause(prof, "The agent does more per request than the floor: it matches the caller against the registrations, copies the frame, writes an audit line."))
	}
	return nil
}
