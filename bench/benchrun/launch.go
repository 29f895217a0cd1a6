package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/envlet/envlet/bench/internal/gen"
)

// hyperfine's --export-json, the fields used here (seconds).
type hfResult struct {
	Command string    `json:"command"`
	Mean    float64   `json:"mean"`
	Stddev  float64   `json:"stddev"`
	Median  float64   `json:"median"`
	Min     float64   `json:"min"`
	Max     float64   `json:"max"`
	Times   []float64 `json:"times"`
}

type launchCmd struct {
	name, cmd string
}

// hyperfine runs cmds with -N (no shell) and returns their results by name.
func (r *runner) hyperfine(tag string, warmup, runs int, env []string, cmds []launchCmd) (map[string]hfResult, error) {
	out := filepath.Join(r.work, "hf-"+tag+".json")
	args := []string{"-N", "--style", "basic", "--warmup", strconv.Itoa(warmup), "--runs", strconv.Itoa(runs), "--export-json", out}
	for _, c := range cmds {
		args = append(args, "-n", c.name, c.cmd)
	}
	cmd := exec.Command("hyperfine", args...)
	cmd.Env = env
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("hyperfine %s: %w", tag, err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	var doc struct{ Results []hfResult }
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	res := map[string]hfResult{}
	for _, x := range doc.Results {
		res[x.Command] = x
	}
	return res, nil
}

// peer is a tool people use today to start a program with secrets in its
// environment, set up to give /bin/true the same variables.
type peer struct {
	name    string // table label
	version string
	cmd     string
	env     []string
	missing string // why it is not measured
	slow    bool   // hundreds of ms a run: a third of the runs
	note    string
}

// launch times starting /bin/true with 20 and 200 variables: bare, through
// env -i (the floor: one extra exec), through the bare Go launcher against
// the floor server (the floor for a Go launcher of this protocol), through
// envlet-exec against the agent, and through the peers.
func (r *runner) launch() error {
	a, err := r.agent("empty")
	if err != nil {
		return err
	}
	// The same launch against an agent that also holds 10,000 other
	// workloads: what a busy node adds to every start.
	big, err := r.agent("load10k")
	if err != nil {
		return err
	}
	defer big.call("DELETE", "/v1/workloads/launch", nil, nil)
	var b strings.Builder
	b.WriteString("## Launch\n\n")
	b.WriteString("Time to start `/bin/true` with N variables in its environment, measured by `hyperfine -N` (no shell; ")
	b.WriteString(fmt.Sprintf("%d runs after 50 warm-ups for the fast commands, %d for sops and direnv, %d for dotenvx). ", r.o.fastRuns, r.o.slowRuns, max(3, r.o.slowRuns/3)))
	b.WriteString("Each row is set against `/bin/true` alone and against the bare Go launcher, the floor for any Go launcher of this protocol: ")
	b.WriteString("bench/barelauncher connects to bench/floorserver over a Unix socket, reads one Env frame of the same variables, and execs. ")
	b.WriteString("envlet-exec talks to a real `envletd -dev` where one workload (matched by uid) has the N variables as its runtime layer; the agent adds PATH, ")
	b.WriteString("and so do the floor server and the `env -i` line, so every program gets N+1 variables. ")
	b.WriteString("A last envlet-exec row asks an agent that holds 10,000 other registered workloads besides this one, as on a busy node.\n\n")

	peers := r.peers()
	var peerNotes []string

	type goalFig struct{ envlet, busy, bare, sops, sopsSame, direnv float64 }
	figs := map[int]goalFig{}
	for _, n := range []int{20, 200} {
		vars := gen.Vars(0, n)
		// The workload: uid 0, N runtime variables.
		reg := registration{ID: "launch", User: "root", Project: "bench", Match: map[string]uint32{"uid": uint32(os.Getuid())}, Runtime: vars}
		for _, x := range []*agentProc{a, big} {
			x.call("DELETE", "/v1/workloads/launch", nil, nil)
			if err := x.call("POST", "/v1/workloads", reg, nil); err != nil {
				return fmt.Errorf("register launch workload: %w", err)
			}
		}
		floor, err := r.startFloor(n)
		if err != nil {
			return err
		}
		names := make([]string, 0, n)
		for k := range vars {
			names = append(names, k)
		}
		sort.Strings(names)
		envI := "env -i PATH=" + gen.PlatformPath
		for _, k := range names {
			envI += " " + k + "=" + vars[k]
		}
		if err := r.preparePeers(peers, n, vars); err != nil {
			return err
		}
		env := append(os.Environ(), "ENVLET_SOCKET="+a.sock, "BARE_SOCKET="+floor)
		for _, p := range peers {
			env = append(env, p.env...)
		}
		fast := []launchCmd{
			{"/bin/true", "/bin/true"},
			{"env -i", envI + " /bin/true"},
			{"bare Go launcher", bin(r.o.benchBin, "barelauncher") + " /bin/true"},
			{"envlet-exec", bin(r.o.bin, "envlet-exec") + " -- /bin/true"},
			{busyName, bin(r.o.bin, "envlet-exec") + " --socket " + big.sock + " -- /bin/true"},
		}
		res, err := r.hyperfine(fmt.Sprintf("fast%d", n), 50, r.o.fastRuns, env, fast)
		if err != nil {
			return err
		}
		order := []string{"/bin/true", "env -i", "bare Go launcher", "envlet-exec", busyName}
		for i, p := range peers {
			if p.missing != "" {
				continue
			}
			runs, warm := r.o.slowRuns, 3
			if p.slow {
				runs, warm = max(3, r.o.slowRuns/3), 1
			}
			pr, err := r.hyperfine(fmt.Sprintf("peer%d-%d", i, n), warm, runs, env, []launchCmd{{p.name, p.cmd}})
			if err != nil {
				peerNotes = append(peerNotes, fmt.Sprintf("- **%s failed with %d variables:** %v", p.name, n, err))
				continue
			}
			res[p.name] = pr[p.name]
			order = append(order, p.name)
		}
		base, bare, el := res["/bin/true"].Median, res["bare Go launcher"].Median, res["envlet-exec"].Median
		fmt.Fprintf(&b, "### %d variables\n\n", n)
		b.WriteString("| command | median | mean ± σ | min | vs `/bin/true` | vs bare Go launcher | envlet-exec is |\n|---|---|---|---|---|---|---|\n")
		for _, name := range order {
			x := res[name]
			faster := "—"
			if name != "envlet-exec" && name != busyName && el > 0 {
				if x.Median >= el {
					faster = fmt.Sprintf("%.1f× faster", x.Median/el)
				} else {
					faster = fmt.Sprintf("%s slower", msf(el-x.Median))
				}
			}
			fmt.Fprintf(&b, "| %s | %s | %s ± %s | %s | +%s | %s (%s) | %s |\n", name, msf(x.Median), msf(x.Mean), msf(x.Stddev), msf(x.Min),
				msf(x.Median-base), signed(x.Median-bare), ratio(x.Median, bare), faster)
		}
		b.WriteString("\n")
		figs[n] = goalFig{envlet: el, busy: res[busyName].Median, bare: bare, sops: res["sops exec-env"].Median, sopsSame: res["sops exec-env --same-process"].Median, direnv: res["direnv exec"].Median}
	}
	a.call("DELETE", "/v1/workloads/launch", nil, nil)
	r.stopFloor()
	for _, p := range peers {
		if p.missing != "" {
			peerNotes = append(peerNotes, fmt.Sprintf("- **%s not measured:** %s", p.name, p.missing))
		} else {
			peerNotes = append(peerNotes, fmt.Sprintf("- %s (%s), with 200 variables: `%s`%s", p.name, p.version, p.cmd, p.note))
		}
	}

	b.WriteString("Peers, as run:\n\n" + strings.Join(peerNotes, "\n") + "\n\n")
	b.WriteString("Re-run: `scripts/bench.sh -only launch`. By hand, with an agent and a floor server running (`bin/envletd -dev -dir D`, ")
	b.WriteString("`bin/bench/floorserver -socket F -vars 20`) and a workload registered for your uid:\n\n")
	b.WriteString("```\nENVLET_SOCKET=D/workload.sock BARE_SOCKET=F hyperfine -N --warmup 50 --runs 500 \\\n")
	b.WriteString("  /bin/true 'env -i PATH=… BENCH_V000=… /bin/true' 'bin/bench/barelauncher /bin/true' 'bin/envlet-exec -- /bin/true'\n```\n")
	r.rep.section(b.String())

	for _, n := range []int{20, 200} {
		f := figs[n]
		d := f.envlet - f.bare
		r.rep.goal(goalRow{
			what:   fmt.Sprintf("Launch, %d variables: envlet-exec over the bare Go launcher", n),
			figure: msf(f.envlet), against: "bare Go launcher " + msf(f.bare), ratio: signed(d) + " (" + ratio(f.envlet, f.bare) + ")",
			goal: "within +0.50 ms", met: met(d <= 0.0005),
		})
		if d > 0.0005 {
			r.rep.note("Launch with %d variables: envlet-exec takes %s more than the bare Go launcher (goal: at most 0.50 ms more). %s", n, msf(d), launchCause)
		}
		db := f.busy - f.bare
		r.rep.goal(goalRow{
			what:   fmt.Sprintf("Launch, %d variables, agent holding 10,000 other workloads: over the bare Go launcher", n),
			figure: msf(f.busy), against: "bare Go launcher " + msf(f.bare), ratio: signed(db) + " (" + ratio(f.busy, f.bare) + ")",
			goal: "within +0.50 ms", met: met(db <= 0.0005),
		})
		if db > 0.0005 {
			why := "Nearly all of it is there with one workload too (above)."
			if f.busy-f.envlet > 0.00025 {
				why = "The one difference between the two agents is the number of registrations the agent matches the caller against (`Agent.match`; see Agent under load)."
			}
			r.rep.note("Launch with %d variables from an agent that holds 10,000 other workloads: envlet-exec takes %s more than the bare Go launcher (goal: at most 0.50 ms more), "+
				"%s more than from an agent with one workload. %s", n, msf(db), signed(f.busy-f.envlet), why)
		}
		var short, floorRatios []string
		for _, p := range []struct {
			name string
			t    float64
		}{{"sops exec-env", f.sops}, {"sops exec-env --same-process", f.sopsSame}, {"direnv exec", f.direnv}} {
			if p.t == 0 {
				r.rep.goal(goalRow{what: fmt.Sprintf("Launch, %d variables: vs %s", n, p.name), figure: msf(f.envlet), against: p.name + " not measured", ratio: "—", goal: "10× faster"})
				continue
			}
			r.rep.goal(goalRow{
				what:   fmt.Sprintf("Launch, %d variables: vs %s", n, p.name),
				figure: msf(f.envlet), against: p.name + " " + msf(p.t), ratio: fmt.Sprintf("%.1f× faster", p.t/f.envlet),
				goal: "10× faster", met: met(p.t/f.envlet >= 10),
			})
			if p.t/f.envlet < 10 {
				short = append(short, fmt.Sprintf("%.1f× faster than %s (%s)", p.t/f.envlet, p.name, msf(p.t)))
				floorRatios = append(floorRatios, fmt.Sprintf("%.1f×", p.t/f.bare))
			}
		}
		if len(short) > 0 {
			why := "envlet-exec itself is within 0.50 ms of the bare Go launcher here, so the gap is not envlet's to close."
			if d > 0.0005 {
				why = "Part of the gap is envlet-exec's own overhead over the bare Go launcher (above)."
			}
			r.rep.note("Launch with %d variables: envlet-exec (%s) is %s; goal: 10×. The bare Go launcher (%s), the least any Go launcher of this protocol costs, is itself only %s faster than the same: "+
				"Go's process start-up and the extra exec bound the ratio on this machine (sops and direnv were measured at about 30 and 34 ms when the goal was set). %s",
				n, msf(f.envlet), strings.Join(short, ", "), msf(f.bare), strings.Join(floorRatios, ", "), why)
		}
	}
	return nil
}

const busyName = "envlet-exec, agent holding 10,000 other workloads"

// launchCause is what a launch does beyond the bare launcher's; used when
// envlet-exec misses its goal against an agent with one workload.
var launchCause = "The extra time is the agent's side of the exchange (matching the caller, a copy of the frame into locked memory, an audit line per serve; the load section profiles it) plus envlet-exec's own work (merging into its environment, the PATH lookup). Under this machine's load the launch rows move by a few tenths of a millisecond from run to run (see σ in the table)."

func signed(sec float64) string {
	if sec >= 0 {
		return "+" + msf(sec)
	}
	return "−" + msf(-sec)
}

// peers finds or reports the peer tools, installed by scripts/bench.sh into
// the cache directory (sops, dotenvx) or from Debian (age, direnv).
func (r *runner) peers() []*peer {
	var out []*peer
	version := func(argv ...string) string {
		b, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			return "version unknown"
		}
		l, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
		return l
	}
	// sops exec-env, age keys.
	sopsBin := filepath.Join(r.o.cache, "bin", "sops")
	for _, name := range []string{"sops exec-env", "sops exec-env --same-process"} {
		sops := &peer{name: name}
		if _, err := os.Stat(sopsBin); err != nil {
			sops.missing = "sops is not installed in " + filepath.Join(r.o.cache, "bin") + " (scripts/bench.sh runs `go install github.com/getsops/sops/v3/cmd/sops@latest` there; it failed or was skipped)"
		} else if _, err := exec.LookPath("age-keygen"); err != nil {
			sops.missing = "age-keygen (Debian `age`) is not installed"
		} else {
			sops.version = version(sopsBin, "--disable-version-check", "--version")
		}
		out = append(out, sops)
	}

	direnv := &peer{name: "direnv exec"}
	if p, err := exec.LookPath("direnv"); err != nil {
		direnv.missing = "direnv (Debian `direnv`) is not installed"
	} else {
		direnv.version = "direnv " + version(p, "version")
	}
	out = append(out, direnv)

	dotenvx := &peer{name: "dotenvx run", slow: true}
	dxBin := filepath.Join(r.o.cache, "npm", "node_modules", ".bin", "dotenvx")
	if _, err := os.Stat(dxBin); err != nil {
		dotenvx.missing = "dotenvx is not installed in " + filepath.Join(r.o.cache, "npm") + " (scripts/bench.sh runs `npm install @dotenvx/dotenvx` there; it failed or was skipped)"
	} else {
		dotenvx.version = "dotenvx " + version(dxBin, "--version") + ", node " + version("node", "--version")
	}
	out = append(out, dotenvx)
	return out
}

// preparePeers writes each peer's files for n variables and sets its
// command line.
func (r *runner) preparePeers(peers []*peer, n int, vars map[string]string) error {
	dir := filepath.Join(r.work, fmt.Sprintf("peers%d", n))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	names := make([]string, 0, len(vars))
	for k := range vars {
		names = append(names, k)
	}
	sort.Strings(names)
	var dotenv, envrc strings.Builder
	dotenv.WriteString("PATH=" + gen.PlatformPath + "\n")
	envrc.WriteString("export PATH=" + gen.PlatformPath + "\n")
	for _, k := range names {
		dotenv.WriteString(k + "=" + vars[k] + "\n")
		envrc.WriteString("export " + k + "=" + vars[k] + "\n")
	}
	for _, p := range peers {
		if p.missing != "" {
			continue
		}
		switch p.name {
		case "sops exec-env", "sops exec-env --same-process":
			key := filepath.Join(dir, "age.key")
			encPath := filepath.Join(dir, "secrets.enc.env")
			sopsBin := filepath.Join(r.o.cache, "bin", "sops")
			if _, err := os.Stat(encPath); err != nil {
				if err := run1("age-keygen", "-o", key); err != nil {
					p.missing = "age-keygen failed: " + err.Error()
					continue
				}
				pub, err := exec.Command("age-keygen", "-y", key).Output()
				if err != nil {
					p.missing = "age-keygen -y failed: " + err.Error()
					continue
				}
				plain := filepath.Join(dir, "plain.env")
				if err := os.WriteFile(plain, []byte(dotenv.String()), 0o600); err != nil {
					return err
				}
				enc, err := exec.Command(sopsBin, "--disable-version-check", "--encrypt", "--age", strings.TrimSpace(string(pub)),
					"--input-type", "dotenv", "--output-type", "dotenv", plain).Output()
				os.Remove(plain)
				if err != nil {
					p.missing = "sops --encrypt failed: " + errText(err)
					continue
				}
				if err := os.WriteFile(encPath, enc, 0o600); err != nil {
					return err
				}
			}
			// The default runs the command as a child and waits;
			// --same-process execs in place, as envlet-exec does.
			p.cmd = sopsBin + " exec-env " + encPath + " /bin/true"
			if strings.HasSuffix(p.name, "--same-process") {
				p.cmd = sopsBin + " exec-env --same-process " + encPath + " /bin/true"
			}
			p.env = []string{"SOPS_AGE_KEY_FILE=" + key}
			p.note = " (an age key; the file encrypted with `sops --encrypt --age …`)"
		case "direnv exec":
			d := filepath.Join(dir, "direnv")
			os.MkdirAll(d, 0o700)
			if err := os.WriteFile(filepath.Join(d, ".envrc"), []byte(envrc.String()), 0o600); err != nil {
				return err
			}
			xdg := []string{"XDG_DATA_HOME=" + filepath.Join(r.work, "xdg", "data"), "XDG_CONFIG_HOME=" + filepath.Join(r.work, "xdg", "config"), "XDG_CACHE_HOME=" + filepath.Join(r.work, "xdg", "cache")}
			allow := exec.Command("direnv", "allow", d)
			allow.Env = append(os.Environ(), xdg...)
			if b, err := allow.CombinedOutput(); err != nil {
				p.missing = "direnv allow failed: " + strings.TrimSpace(string(b))
				continue
			}
			p.cmd = "direnv exec " + d + " /bin/true"
			p.env = xdg
		case "dotenvx run":
			f := filepath.Join(dir, "dotenvx.env")
			if err := os.WriteFile(f, []byte(dotenv.String()), 0o600); err != nil {
				return err
			}
			p.cmd = filepath.Join(r.o.cache, "npm", "node_modules", ".bin", "dotenvx") + " run --quiet -f " + f + " -- /bin/true"
		}
	}
	return nil
}

func run1(name string, args ...string) error {
	b, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", name, err, strings.TrimSpace(string(b)))
	}
	return nil
}

func errText(err error) string {
	if ee, ok := err.(*exec.ExitError); ok && len(ee.Stderr) > 0 {
		return strings.TrimSpace(string(ee.Stderr))
	}
	return err.Error()
}
