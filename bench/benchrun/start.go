package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// start times an agent's start to READY (the export lines of -dev, printed
// once the sockets are open and every registration is loaded) with no
// workload, 1,000 and 10,000 workloads in workloads.d. Each layout's first
// start (which creates the key ring) is not counted.
func (r *runner) start() error {
	type row struct {
		name  string
		n     int
		times []time.Duration
	}
	var rows []row
	for _, l := range []struct {
		layout, name string
		n            int
	}{{"empty", "no workload", 0}, {"load1k", "1,000 workloads × 64 variables", 1000}, {"load10k", "10,000 workloads × 64 variables", 10000}} {
		if _, err := r.agent(l.layout); err != nil {
			return err
		}
		r.stopAgent(l.layout)
		x := row{name: l.name, n: l.n}
		for i := 0; i < r.o.startReps; i++ {
			a, err := startAgent(bin(r.o.bin, "envletd"), filepath.Join(r.work, l.layout))
			if err != nil {
				return err
			}
			x.times = append(x.times, a.ready)
			a.stop()
		}
		logf("start %s: %v", l.name, x.times)
		rows = append(rows, x)
	}
	// One more start of the largest store, profiled, not counted.
	var pr *perfRecorder
	a, err := startAgentHook(bin(r.o.bin, "envletd"), filepath.Join(r.work, "load10k"), func(pid int) { pr = r.startPerf(pid, "start") })
	if err != nil {
		return err
	}
	prof := pr.stop()
	a.stop()
	base := median(rows[0].times)
	var b strings.Builder
	b.WriteString("## Start\n\n")
	b.WriteString("Time from the exec of `envletd -dev -dir DIR` to READY: the two `export` lines it prints once its sockets are open, the store is read and ")
	b.WriteString("every registration in workloads.d is loaded and resolved (the same moment it logs `serving` and would send READY=1 to systemd). ")
	fmt.Fprintf(&b, "Median of %d starts per row; the first start of each directory (which creates the key ring) is not counted. ", r.o.startReps)
	b.WriteString("The baseline is the agent with no workload.\n\n")
	b.WriteString("Re-run: `scripts/bench.sh -only start`; by hand, `time (bin/envletd -dev -dir DIR | head -2)` with the files in DIR/workloads.d.\n\n")
	b.WriteString("| store | median | all | vs no workload | per workload |\n|---|---|---|---|---|\n")
	for _, x := range rows {
		m := median(x.times)
		per := "—"
		if x.n > 0 {
			per = us((m - base) / time.Duration(x.n))
		}
		var all []string
		for _, t := range x.times {
			all = append(all, ms(t))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", x.name, ms(m), strings.Join(all, ", "), ratio(float64(m), float64(base)), per)
	}
	m1, m10 := median(rows[1].times)-base, median(rows[2].times)-base
	growth := float64(m10) / float64(m1)
	fmt.Fprintf(&b, "\nFrom 1,000 to 10,000 workloads the time over the empty agent's grows %.1f× for 10× the workloads", growth)
	if growth > 12 {
		c := startCause(prof)
		b.WriteString(": worse than linear. " + c)
		r.rep.note("Start grows worse than linearly with workloads in workloads.d (%.1f× the time for 10× the workloads; %s with 10,000). %s", growth, ms(median(rows[2].times)), c)
	} else {
		b.WriteString(": linear.")
		if pr := prof.share("parseRegistration"); pr >= 30 {
			fmt.Fprintf(&b, " %.0f%% of a 10,000-workload start's CPU samples are under `parseRegistration`, decoding the registration files "+
				"(on every core, `dirWatch.load`): `strictUnmarshal` (agent/wipe.go) decodes each document twice, a strict pass with json.Decoder over a copy "+
				"whose values are masked, then json.Unmarshal of the real bytes. A decoder made for the registration document, one pass, would take most of that.", pr)
		}
	}
	b.WriteString("\n\n")
	b.WriteString(prof.markdown("a start with 10,000 workloads"))
	r.rep.section(b.String())
	r.rep.goal(goalRow{what: "Start to READY, 10,000 workloads", figure: ms(median(rows[2].times)), against: "no workload " + ms(base),
		ratio: ratio(float64(median(rows[2].times)), float64(base)), goal: "—"})
	return nil
}

// register times registering workloads one by one through the admin API
// (POST /v1/workloads), the way an orchestrator would, against dropping
// files into workloads.d before a start.
func (r *runner) register() error {
	dir := filepath.Join(r.work, "register")
	a, err := startAgent(bin(r.o.bin, "envletd"), dir)
	if err != nil {
		return err
	}
	defer a.stop()
	const bucket = 100
	var lat []time.Duration
	began := time.Now()
	for i := 0; i < r.o.regMax && time.Since(began) < r.o.regBudget; i++ {
		reg := benchRegistration(i, 64, "bench")
		t := time.Now()
		if err := a.call("POST", "/v1/workloads", reg, nil); err != nil {
			return err
		}
		lat = append(lat, time.Since(t))
	}
	total := time.Since(began)
	nDone := len(lat)
	if nDone < 2*bucket {
		return fmt.Errorf("only %d registrations in %s", nDone, r.o.regBudget)
	}
	mean := func(d []time.Duration) time.Duration {
		var s time.Duration
		for _, x := range d {
			s += x
		}
		return s / time.Duration(len(d))
	}
	first, last := mean(lat[:bucket]), mean(lat[nDone-bucket:])
	// Per-registration time may grow with the store: fit t(i) = c + k·i
	// through the two buckets and sum it to 10,000.
	k := float64(last-first) / float64(nDone-bucket)
	c := float64(first) - k*float64(bucket/2)
	const target = 10000
	est := time.Duration(c*target + k*target*target/2)
	stateSize := int64(0) // the local store: state file and log
	for _, name := range []string{"state.enc", "state.log"} {
		if fi, err := os.Stat(filepath.Join(dir, "state", name)); err == nil {
			stateSize += fi.Size()
		}
	}
	// The file route: write the files, start, READY.
	fileDir := filepath.Join(r.work, "register-files")
	t := time.Now()
	if err := writeWorkloads(fileDir, target, 64, func(int) string { return "bench" }, false); err != nil {
		return err
	}
	fa, err := startAgent(bin(r.o.bin, "envletd"), fileDir)
	if err != nil {
		return err
	}
	fileRoute := time.Since(t)
	fa.stop()
	os.RemoveAll(fileDir)

	var b strings.Builder
	b.WriteString("## Registering workloads through the API\n\n")
	b.WriteString("Workloads registered one after another with `POST /v1/workloads` (64 runtime variables each, as `envlet workload register` sends them), ")
	fmt.Fprintf(&b, "up to %s registrations or %s, whichever comes first, against writing 10,000 registration files into workloads.d and starting the agent. ", thousands(int64(r.o.regMax)), r.o.regBudget)
	b.WriteString("An API registration is stored (sealed) in the local store: one record, holding its values, appended to the store's log and fdatasynced, whatever the size of the store ")
	b.WriteString("(the whole state is rewritten only when the log outgrows it, once per that many bytes committed).\n\n")
	b.WriteString("Re-run: `scripts/bench.sh -only register` (`-register-max N -register-budget D`).\n\n")
	b.WriteString("| | figure |\n|---|---|\n")
	fmt.Fprintf(&b, "| registered through the API | %s in %s |\n", thousands(int64(nDone)), total.Round(time.Millisecond))
	fmt.Fprintf(&b, "| mean time of registrations 1–%d | %s |\n", bucket, ms(first))
	fmt.Fprintf(&b, "| mean time of registrations %d–%d | %s (%s the first hundred's) |\n", nDone-bucket+1, nDone, ms(last), ratio(float64(last), float64(first)))
	fmt.Fprintf(&b, "| local store (state.enc and state.log) after %s registrations | %s |\n", thousands(int64(nDone)), mib(stateSize))
	fmt.Fprintf(&b, "| 10,000 through the API, extrapolated (time per registration growing linearly) | about %s |\n", est.Round(time.Second))
	fmt.Fprintf(&b, "| 10,000 as files in workloads.d: write them, start the agent, READY | %s |\n", fileRoute.Round(time.Millisecond))
	fmt.Fprintf(&b, "\nFinding: registering 10,000 workloads through the API would take about %.0f× as long as dropping them into workloads.d.", float64(est)/float64(fileRoute))
	b.WriteString(" " + registerCause + "\n")
	r.rep.section(b.String())
	r.rep.goal(goalRow{what: "Register 10,000 workloads through the API (extrapolated)", figure: "≈ " + est.Round(time.Second).String(),
		against: "files in workloads.d " + fileRoute.Round(time.Millisecond).String(), ratio: ratio(float64(est), float64(fileRoute)), goal: "—"})
	return nil
}

var registerCause = ""

// startCause explains a start that grows worse than linearly: string
// compares and map iteration under the workloads.d rescan are the mark of
// the per-file scan of every loaded file.
func startCause(p *profile) string {
	if p == nil {
		return "(perf was not available to profile the start in this run.)"
	}
	if t := p.top(); t != "" {
		return fmt.Sprintf("The profile's heaviest envlet function during the start is `%s` (%.0f%% inclusive).", t, p.funcs[0].incl)
	}
	return ""
}
