package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// metricsWorkloads and metricsClients: the metrics section's load, the
// middle cell of the load section (1,000 workloads, 64 clients), where the
// agent is busiest without queueing clients behind max_conns.
const (
	metricsWorkloads = 1000
	metricsClients   = 64
	metricsRounds    = 4 // pairs of cells per agent: with, without, without, with…
)

// metricsCost (issue 17) measures what Prometheus metrics cost the serve
// path: two agents from the same build on the same 1,000 workloads, one
// with metrics_listen on a free loopback port scraped every second as
// Prometheus would, one without, driven by the same load alternately
// (with, without, without, with, …) so drift in the machine's other load
// hits both alike.
func (r *runner) metricsCost() error {
	addr, err := freeLoopback()
	if err != nil {
		return err
	}
	with, err := r.confAgent("metrics-on", "metrics_listen = "+addr)
	if err != nil {
		return err
	}
	defer with.stop()
	without, err := r.confAgent("metrics-off", "")
	if err != nil {
		return err
	}
	defer without.stop()

	// The scraper: GET /metrics once a second, as a Prometheus server with
	// scrape_interval: 1s would. One scrape before the load, so a listener
	// that does not answer fails the section rather than measuring nothing.
	var scrapes, scrapeErrs, scrapeBytes atomic.Int64
	var firstScrapeErr atomic.Value
	hc := &http.Client{Timeout: 5 * time.Second}
	scrape := func() error {
		resp, err := hc.Get("http://" + addr + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /metrics: %s", resp.Status)
		}
		scrapeBytes.Store(n)
		return nil
	}
	if err := scrape(); err != nil {
		return fmt.Errorf("metrics_listen = %s: %w (see %s/agent.log)", addr, err, with.dir)
	}
	stopScraper := make(chan struct{})
	scraperDone := make(chan struct{})
	go func() {
		defer close(scraperDone)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stopScraper:
				return
			case <-tick.C:
				if err := scrape(); err != nil {
					scrapeErrs.Add(1)
					firstScrapeErr.CompareAndSwap(nil, err.Error())
					continue
				}
				scrapes.Add(1)
			}
		}
	}()
	defer func() {
		select {
		case <-stopScraper:
		default:
			close(stopScraper)
		}
		<-scraperDone
	}()

	type side struct {
		name  string
		a     *agentProc
		cells []loadCell
		cpu   []time.Duration // the agent's CPU over each cell's window
		lat   []time.Duration
		n     int
	}
	on := &side{name: "metrics on, scraped every second", a: with}
	off := &side{name: "metrics off", a: without}
	for round := 0; round < metricsRounds; round++ {
		order := []*side{on, off}
		if round%2 == 1 {
			order = []*side{off, on}
		}
		for _, s := range order {
			var cpu0, cpu1 time.Duration
			cpuDone := make(chan struct{})
			window := func(start, end time.Time) {
				// The agent's CPU over the counted window (user and
				// system), read at its two ends.
				go func() {
					defer close(cpuDone)
					time.Sleep(time.Until(start))
					cpu0, _ = procCPU(s.a.pid())
					time.Sleep(time.Until(end))
					cpu1, _ = procCPU(s.a.pid())
				}()
			}
			cell, err := r.runLoad(s.a.sock, metricsWorkloads, metricsClients, window)
			<-cpuDone
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			if cell.errs > 0 {
				return fmt.Errorf("%s: %d requests failed, the first: %s", s.name, cell.errs, cell.errText)
			}
			s.lat = append(s.lat, cell.lat...)
			cell.lat = nil
			s.cells = append(s.cells, cell)
			s.cpu = append(s.cpu, cpu1-cpu0)
			s.n += cell.n
			logf("metrics round %d %-34s %8.0f req/s  p50 %s  p99 %s  agent CPU %s", round+1, s.name, cell.rps, us(cell.p50), us(cell.p99), ms(cpu1-cpu0))
		}
	}
	close(stopScraper)
	<-scraperDone
	if n := scrapeErrs.Load(); n > 0 {
		return fmt.Errorf("%d scrapes of /metrics failed, the first: %v", n, firstScrapeErr.Load())
	}

	total := func(s *side) (rps float64, p50, p99, cpuPer time.Duration) {
		sortDurations(s.lat)
		var cpu time.Duration
		for _, c := range s.cpu {
			cpu += c
		}
		rps = float64(s.n) / (float64(len(s.cells)) * r.o.loadDur.Seconds())
		return rps, percentile(s.lat, 50), percentile(s.lat, 99), cpu / time.Duration(max(1, s.n))
	}
	onRPS, onP50, onP99, onCPU := total(on)
	offRPS, offP50, offP99, offCPU := total(off)

	var b strings.Builder
	b.WriteString("## Metrics\n\n")
	fmt.Fprintf(&b, "What Prometheus metrics (issue 17: `metrics_listen`, agent/internal/metrics) cost the serve path. Two agents from the same build, each with the same %s workloads of 64 variables and the same config file but for one line: one has `metrics_listen` on a free loopback port, scraped every second (`GET /metrics`, as Prometheus with `scrape_interval: 1s`; %d scrapes of %s bytes, none failed), the other none. ",
		thousands(metricsWorkloads), scrapes.Load(), thousands(scrapeBytes.Load()))
	fmt.Fprintf(&b, "Both are driven by the load of the load section (%d clients, each worker process its own workload's uid, GetEnv on a new connection per request) for %s per cell after a 0.5 s warm-up, "+
		"%d cells each, alternating (with, without, without, with, …) so drift in the machine's other load hits both alike. The agent's CPU (user and system, /proc/PID/stat) is read at the two ends of each cell's window. Throughput and latency are over all of each agent's cells.\n\n",
		metricsClients, r.o.loadDur, metricsRounds)
	b.WriteString("Re-run: `make build && scripts/bench.sh -only metrics` (`-load-duration 10s` for longer cells).\n\n")
	b.WriteString("| agent | requests/s | p50 | p99 | agent CPU per request |\n|---|---|---|---|---|\n")
	fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", on.name, thousands(int64(onRPS)), us(onP50), us(onP99), nsOrUs(onCPU))
	fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", off.name, thousands(int64(offRPS)), us(offP50), us(offP99), nsOrUs(offCPU))
	fmt.Fprintf(&b, "| with / without | %s | %s | %s | %s |\n\n", ratio(onRPS, offRPS), ratio(float64(onP50), float64(offP50)), ratio(float64(onP99), float64(offP99)), ratio(float64(onCPU), float64(offCPU)))
	b.WriteString("Each cell, in the order run:\n\n| round | agent | requests/s | p50 | p99 | agent CPU |\n|---|---|---|---|---|---|\n")
	for i := 0; i < metricsRounds; i++ {
		order := []*side{on, off}
		if i%2 == 1 {
			order = []*side{off, on}
		}
		for _, s := range order {
			c := s.cells[i]
			fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s |\n", i+1, s.name, thousands(int64(c.rps)), us(c.p50), us(c.p99), ms(s.cpu[i]))
		}
	}
	spread := func(s *side) string {
		lo, hi := s.cells[0].rps, s.cells[0].rps
		for _, c := range s.cells {
			lo, hi = min(lo, c.rps), max(hi, c.rps)
		}
		return fmt.Sprintf("%s–%s/s", thousands(int64(lo)), thousands(int64(hi)))
	}
	fmt.Fprintf(&b, "\nThe spread between cells of one agent (%s with metrics, %s without) is the noise a difference must exceed to be seen; the machine's load average is in the Machine table.\n", spread(on), spread(off))
	r.rep.section(b.String())
	// "Nothing you can see": within the spread of back-to-back cells of
	// one agent on a shared machine, taken here as 5%.
	ok := onRPS >= 0.95*offRPS
	r.rep.goal(goalRow{
		what:   fmt.Sprintf("GetEnv requests/s with metrics on and scraped every second, %s workloads, %d clients", thousands(metricsWorkloads), metricsClients),
		figure: thousands(int64(onRPS)) + "/s, p99 " + us(onP99), against: "metrics off " + thousands(int64(offRPS)) + "/s, p99 " + us(offP99),
		ratio: fmt.Sprintf("%.0f%%", 100*onRPS/offRPS), goal: "≥ 95% of without", met: met(ok),
	})
	if !ok {
		r.rep.note("With metrics on and scraped every second the agent served %.0f%% of the GetEnv requests it served without (%s/s against %s/s; agent CPU per request %s against %s).",
			100*onRPS/offRPS, thousands(int64(onRPS)), thousands(int64(offRPS)), nsOrUs(onCPU), nsOrUs(offCPU))
	}
	return nil
}

func nsOrUs(d time.Duration) string {
	if d < 10*time.Microsecond {
		return fmt.Sprintf("%.1f µs", float64(d)/1e3)
	}
	return us(d)
}

// freeLoopback is a 127.0.0.1 address with a port free right now (the
// kernel's pick; the agent binds it a moment later).
func freeLoopback() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	l.Close()
	return addr, nil
}

// confAgent starts envletd -config on metricsWorkloads registrations under
// r.work/name, with extra config lines: the metrics section's agents run
// from a config file, since -dev takes none and metrics_listen is a config
// key. It is ready when it logs "serving", which it does once its sockets
// are open and workloads.d is loaded (and "serving metrics" with them).
func (r *runner) confAgent(name, extra string) (*agentProc, error) {
	dir := filepath.Join(r.work, name)
	if err := writeWorkloads(dir, metricsWorkloads, 64, func(int) string { return "bench" }, false); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "envletd.conf")
	text := fmt.Sprintf("state_dir = %[1]s/state\nkey_file = %[1]s/keyring\nworkload_socket = %[1]s/workload.sock\nadmin_socket = %[1]s/admin.sock\n"+
		"credentials_socket = %[1]s/credentials.sock\nworkloads_dir = %[1]s/workloads.d\nmount_dir = %[1]s/mounts\naudit_log = %[1]s/audit.log\ntoken_dir = %[1]s/tokens\n%[2]s\n"+
		"[defaults]\nPATH = /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n", dir, extra)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return nil, err
	}
	logFile, err := os.OpenFile(filepath.Join(dir, "agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(bin(r.o.bin, "envletd"), "-config", conf)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	a := &agentProc{dir: dir, cmd: cmd, done: make(chan struct{}), sock: filepath.Join(dir, "workload.sock"), admin: filepath.Join(dir, "admin.sock")}
	// Ready: serving the sockets, and the metrics listener open (it opens
	// just after, so the first scrape finds it).
	readyLines := []string{"serving:"}
	if strings.Contains(extra, "metrics_listen") {
		readyLines = append(readyLines, "serving metrics:")
	}
	serving := make(chan struct{})
	logCopy := make(chan struct{})
	go func() {
		defer close(logCopy)
		w := bufio.NewWriter(logFile)
		sc := bufio.NewScanner(stderr)
		seen := false
		for sc.Scan() {
			w.WriteString(sc.Text() + "\n")
			if !seen {
				for i, l := range readyLines {
					if strings.Contains(sc.Text(), l) {
						readyLines = append(readyLines[:i], readyLines[i+1:]...)
						break
					}
				}
				if len(readyLines) == 0 {
					seen = true
					close(serving)
				}
			}
			if seen {
				w.Flush()
			}
		}
		w.Flush()
		io.Copy(io.Discard, stderr)
	}()
	go func() { <-logCopy; cmd.Wait(); close(a.done) }()
	select {
	case <-serving:
	case <-a.done:
		return nil, fmt.Errorf("envletd %s exited before serving; see %s/agent.log", name, dir)
	case <-time.After(2 * time.Minute):
		a.stop()
		return nil, fmt.Errorf("envletd %s not serving after 2 minutes; see %s/agent.log", name, dir)
	}
	a.ready = time.Since(t0)
	a.client = adminClient(a.admin)
	logf("agent %s serving in %s", name, a.ready.Round(time.Millisecond))
	return a, nil
}
