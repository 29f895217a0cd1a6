// Command benchrun is the driver behind `make bench`: it measures envlet
// against the floor (bare programs doing the least the same job needs) and
// against the tools people use today, and writes BENCHMARKS.md.
//
//	benchrun [-only SECTIONS] [-out FILE] [-bin DIR] [-cache DIR] ...
//
// It needs root (load and fan-out clients run as other uids, through
// SysProcAttr.Credential) and the binaries of `make build` plus
// barelauncher and floorserver (scripts/bench.sh builds them). Its own
// subcommands loadworker and poll are what those client processes run.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// sections, in the order they run and appear.
var allSections = []string{"size", "launch", "load", "memory", "fanout", "start", "register", "adminwrite", "metrics"}

// extraSections run only when named in -only: they take longer (make bench-etcd-org).
var extraSections = []string{"etcdorg", "etcdfleet"}

type options struct {
	out            string
	bin            string // envletd, envlet, envlet-exec
	benchBin       string // barelauncher, floorserver
	cache          string // heavy peers: sops, dotenvx; age and direnv come from Debian
	only           map[string]bool
	loadDur        time.Duration
	fastRuns       int
	slowRuns       int
	fanReps        int
	mountTimeout   time.Duration
	startReps      int
	regMax         int
	regBudget      time.Duration
	orgScale       float64
	fleetAgents    int
	fleetWorkloads int
	fleetReps      int
	goBench        string // file holding `go test -bench` output to include
	keep           bool
	repo           string
}

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "loadworker":
			os.Exit(loadWorker(os.Args[2:]))
		case "poll":
			os.Exit(pollWorker(os.Args[2:]))
		case "mountfloor":
			os.Exit(mountFloorMain(os.Args[2:]))
		}
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("benchrun", flag.ContinueOnError)
	var o options
	var only string
	home, _ := os.UserHomeDir()
	fs.StringVar(&o.out, "out", "BENCHMARKS.md", "report to write")
	fs.StringVar(&o.bin, "bin", "bin", "directory with envletd, envlet, envlet-exec")
	fs.StringVar(&o.benchBin, "bench-bin", "bin/bench", "directory with barelauncher and floorserver")
	fs.StringVar(&o.cache, "cache", filepath.Join(home, ".cache", "envlet-bench"), "where heavy peers are installed")
	fs.StringVar(&only, "only", "", "comma-separated sections to run: "+strings.Join(allSections, ","))
	fs.DurationVar(&o.loadDur, "load-duration", 3*time.Second, "measured time per load cell")
	fs.IntVar(&o.fastRuns, "runs", 500, "hyperfine runs for commands of a few ms")
	fs.IntVar(&o.slowRuns, "slow-runs", 30, "hyperfine runs for sops and direnv (dotenvx: a third)")
	fs.IntVar(&o.fanReps, "fanout-reps", 10, "changes timed in the fan-out benchmark")
	fs.DurationVar(&o.mountTimeout, "mount-timeout", 4*time.Minute, "longest wait for 10,000 mounts to be rewritten")
	fs.IntVar(&o.startReps, "start-reps", 3, "starts timed per store size")
	fs.IntVar(&o.regMax, "register-max", 1500, "workloads registered through the API at most")
	fs.DurationVar(&o.regBudget, "register-budget", 30*time.Second, "time allowed for API registration")
	fs.Float64Var(&o.orgScale, "org-scale", 1, "etcdorg: fraction of the organization of issue 18 (1: about 700,000 records)")
	fs.IntVar(&o.fleetAgents, "fleet-agents", 16, "etcdfleet: agents on the etcd cluster")
	fs.IntVar(&o.fleetWorkloads, "fleet-workloads", 1000, "etcdfleet: workloads per agent")
	fs.IntVar(&o.fleetReps, "fleet-reps", 100, "etcdfleet: changes timed")
	fs.StringVar(&o.goBench, "go-bench", "", "file with `go test -bench` output to include")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directories")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o.only = map[string]bool{}
	for _, s := range strings.Split(only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			o.only[s] = true
		}
	}
	for s := range o.only {
		if !contains(allSections, s) && !contains(extraSections, s) {
			fmt.Fprintf(os.Stderr, "benchrun: unknown section %q (want %s)\n", s, strings.Join(allSections, ","))
			return 2
		}
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "benchrun: run as root: load and fan-out clients run as other uids")
		return 2
	}
	wd, _ := os.Getwd()
	o.repo = wd
	for _, p := range []*string{&o.bin, &o.benchBin, &o.out, &o.goBench} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(wd, *p)
		}
	}

	r, err := newRunner(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchrun:", err)
		return 1
	}
	defer r.close()
	began := time.Now()
	r.rep.machine = machineInfo(o.repo)
	for _, s := range append(allSections, extraSections...) {
		if contains(extraSections, s) && !o.only[s] || len(o.only) > 0 && !o.only[s] {
			continue
		}
		t := time.Now()
		logf("== %s", s)
		var err error
		switch s {
		case "size":
			err = r.size()
		case "launch":
			err = r.launch()
		case "load":
			err = r.load()
		case "memory":
			err = r.memory()
		case "fanout":
			err = r.fanout()
		case "start":
			err = r.start()
		case "register":
			err = r.register()
		case "adminwrite":
			err = r.adminwrite()
		case "metrics":
			err = r.metricsCost()
		case "etcdorg":
			err = r.etcdorg()
		case "etcdfleet":
			err = r.etcdfleet()
		}
		if err != nil {
			logf("%s failed: %v", s, err)
			r.rep.failed(s, err)
		}
		logf("== %s done in %s", s, time.Since(t).Round(time.Millisecond))
	}
	r.rep.machine.loadEnd = loadAvg()
	r.rep.elapsed = time.Since(began)
	if o.goBench != "" {
		if b, err := os.ReadFile(o.goBench); err == nil {
			r.rep.goBench = string(b)
		}
	}
	if err := os.WriteFile(o.out, []byte(r.rep.markdown(o)), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "benchrun:", err)
		return 1
	}
	logf("wrote %s in %s", o.out, time.Since(began).Round(time.Second))
	if r.rep.nFailed > 0 {
		return 1
	}
	return 0
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// runner holds what sections share: the work directory, the agents started
// so far (by layout, so one 10,000-workload agent serves load and memory),
// and the report being built.
type runner struct {
	o      options
	work   string // 0755 temp dir: clients running as other uids reach into it
	self   string // a copy of this binary in work, for those clients
	rep    *report
	agents map[string]*agentProc
	floor  *exec.Cmd
	loaded bool // the load section has driven the load agents
	ctx    context.Context
	cancel context.CancelFunc
}

func newRunner(o options) (*runner, error) {
	for _, f := range []string{"envletd", "envlet", "envlet-exec"} {
		if _, err := os.Stat(filepath.Join(o.bin, f)); err != nil {
			return nil, fmt.Errorf("%s: %w (run make build)", f, err)
		}
	}
	for _, f := range []string{"barelauncher", "floorserver"} {
		if _, err := os.Stat(filepath.Join(o.benchBin, f)); err != nil {
			return nil, fmt.Errorf("%s: %w (scripts/bench.sh builds it)", f, err)
		}
	}
	work, err := os.MkdirTemp("", "elb")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(work, 0o755); err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	self := filepath.Join(work, "benchrun")
	if err := copyFile(exe, self, 0o755); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &runner{o: o, work: work, self: self, rep: &report{}, agents: map[string]*agentProc{}, ctx: ctx, cancel: cancel}, nil
}

func (r *runner) close() {
	for _, a := range r.agents {
		a.stop()
	}
	r.stopFloor()
	r.cancel()
	if !r.o.keep {
		os.RemoveAll(r.work)
	} else {
		logf("kept %s", r.work)
	}
}

func copyFile(src, dst string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, mode)
}

func bin(dir, name string) string { return filepath.Join(dir, name) }
