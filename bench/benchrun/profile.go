package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A profile is where an agent spent its CPU while a benchmark ran, sampled
// by perf (Debian linux-perf) at 999 Hz with call graphs; Go keeps frame
// pointers, so the agent's functions come out with their callers. Taken
// only where perf is installed; the figures never depend on it.
type profile struct {
	samples int
	funcs   []profFunc // envlet's own functions, by inclusive share
	self    []profFunc // every symbol, by self share
}

type profFunc struct {
	name          string
	incl, selfPct float64
}

// share returns the inclusive share of the first function whose name
// contains s, or 0.
func (p *profile) share(s string) float64 {
	if p == nil {
		return 0
	}
	for _, f := range p.funcs {
		if strings.Contains(f.name, s) {
			return f.incl
		}
	}
	return 0
}

func (p *profile) top() string {
	if p == nil || len(p.funcs) == 0 {
		return ""
	}
	return p.funcs[0].name
}

// perfRecorder is a running `perf record -p PID`.
type perfRecorder struct {
	cmd  *exec.Cmd
	data string
}

func perfAvailable() bool {
	_, err := exec.LookPath("perf")
	return err == nil
}

func (r *runner) startPerf(pid int, tag string) *perfRecorder {
	if !perfAvailable() {
		return nil
	}
	data := filepath.Join(r.work, "perf-"+tag+".data")
	cmd := exec.Command("perf", "record", "-q", "-F", "999", "-g", "-p", strconv.Itoa(pid), "-o", data)
	if err := cmd.Start(); err != nil {
		logf("perf: %v", err)
		return nil
	}
	return &perfRecorder{cmd: cmd, data: data}
}

// stop ends the recording and reads the profile.
func (pr *perfRecorder) stop() *profile {
	if pr == nil {
		return nil
	}
	pr.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan struct{})
	go func() { pr.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		pr.cmd.Process.Kill()
		<-done
	}
	out, err := exec.Command("perf", "report", "-i", pr.data, "--children", "--sort", "symbol", "-g", "none", "--stdio", "--percent-limit", "1").Output()
	if err != nil {
		logf("perf report: %v", err)
		return nil
	}
	os.Remove(pr.data)
	return parsePerf(string(out))
}

// parsePerf reads `perf report --children --sort symbol -g none --stdio`.
func parsePerf(out string) *profile {
	p := &profile{}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "# Samples:") {
			f := strings.Fields(l)
			if len(f) >= 3 {
				p.samples, _ = strconv.Atoi(strings.TrimSuffix(f[2], "K"))
				if strings.HasSuffix(f[2], "K") {
					p.samples *= 1000
				}
			}
		}
		f := strings.Fields(l)
		if len(f) < 4 || !strings.HasSuffix(f[0], "%") || !strings.HasSuffix(f[1], "%") {
			continue
		}
		incl, err1 := strconv.ParseFloat(strings.TrimSuffix(f[0], "%"), 64)
		self, err2 := strconv.ParseFloat(strings.TrimSuffix(f[1], "%"), 64)
		if err1 != nil || err2 != nil {
			continue
		}
		name := f[3]
		fn := profFunc{name: strings.TrimPrefix(name, "github.com/envlet/envlet/"), incl: incl, selfPct: self}
		if strings.Contains(name, "envlet/envlet/") && !wrapper(name) {
			p.funcs = append(p.funcs, fn)
		}
		if self >= 1 {
			p.self = append(p.self, fn)
		}
	}
	sort.SliceStable(p.funcs, func(i, j int) bool { return p.funcs[i].incl > p.funcs[j].incl })
	sort.SliceStable(p.self, func(i, j int) bool { return p.self[i].selfPct > p.self[j].selfPct })
	return p
}

// wrapper: frames that only start or wrap the real work.
func wrapper(name string) bool {
	for _, s := range []string{"gowrap", ".Run.func", "runAll", "(*Agent).Run", "serveWorkloads", "main.", ".func1"} {
		if strings.Contains(name, s) {
			return true
		}
	}
	return false
}

// markdown renders the profile as a short table.
func (p *profile) markdown(what string) string {
	if p == nil {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "<details><summary>Where the agent's CPU went: %s (perf, %s samples)</summary>\n\n", what, thousands(int64(p.samples)))
	b.WriteString("| envlet function | inclusive | self |\n|---|---|---|\n")
	for i, f := range p.funcs {
		if i == 8 || f.incl < 2 {
			break
		}
		fmt.Fprintf(&b, "| `%s` | %.1f%% | %.1f%% |\n", f.name, f.incl, f.selfPct)
	}
	b.WriteString("\n| hottest symbols (self) | self |\n|---|---|\n")
	for i, f := range p.self {
		if i == 6 {
			break
		}
		fmt.Fprintf(&b, "| `%s` | %.1f%% |\n", f.name, f.selfPct)
	}
	b.WriteString("\n</details>\n\n")
	return b.String()
}

// A known hot spot: a function that a profile can name (fn), what it does
// wrong at scale (why, a sentence that starts with its name) and the fix
// suggested to the agent's owners.
type hotSpot struct {
	fn, why, fix string
}

var hotSpots = []hotSpot{
	{"(*Agent).match", "`Agent.match` (agent/server.go) tests every registration against the caller on every request, under the read lock, so the cost of a request grows with the number of workloads.",
		"index registrations by uid and by gid (a map to the few registrations each can match, plus a short list of those matched by other fields), so a request looks only at its candidates."},
	{"(*Agent).resolveTouched", "`resolveTouched` (agent/resolve.go) recomputes, under the write lock, the digest of what every affected workload receives (a merge of its sorted layers, in parallel shards) and queues mounts and Changed frames for those whose digest moved.",
		"where a change touches only shared layers, hash the changed names' contribution instead of re-merging every workload; move the digest pass out of the write lock and swap the results in under a short one."},
	{"(*auditLog).sums", "`auditLog.sums` computes the HMAC of every value served when the serve records' HMAC cache misses (a workload's first serve at an environment revision, or more workloads served than the cache holds).",
		"a larger cache (`maxServedHMACBytes`), or one HMAC over the whole frame per serve (an audit format change)."},
	{"(*auditLog).write", "`auditLog.write` encodes an audit line per serve (with an HMAC per variable, kept per workload environment) and queues it for the audit writer.",
		"record one digest of the frame per serve rather than one HMAC per variable (a change of the record's format)."},
	{"(*auditQueue).writeBatch", "`auditQueue.writeBatch` writes the batched audit lines: a serve's record holds a 64-digit HMAC per variable (some 5 KB for 64 variables), so at 10,000 serves a second the agent writes some 50 MB/s of audit log.",
		"record one digest of the frame per serve rather than one HMAC per variable (a change of the record's format)."},
	{"agent.identify", "`identify` (agent/identity.go) reads the caller's /proc cgroup file on every request, whether or not any registration matches by cgroup.",
		"read it only when some registration matches by systemd unit, cgroup or container id (uid and gid come with SO_PEERCRED), or cache it per pid and start time."},
	{"(*Pool).Copy", "`Pool.Copy` copies the workload's frame into a fresh locked buffer on every serve.",
		"serve the frame under a reference count instead of copying it."},
}

// cause explains a profile: the known hot spots it shows with their share.
func cause(p *profile, fallback string) string {
	if p == nil {
		return fallback + " (perf was not available to profile the agent in this run.)"
	}
	var parts []string
	for _, h := range hotSpots {
		if s := p.share(h.fn); s >= 8 {
			parts = append(parts, fmt.Sprintf("%.0f%% of the agent's CPU samples are under %s Suggested fix: %s", s, h.why, h.fix))
		}
	}
	if len(parts) == 0 {
		if t := p.top(); t != "" {
			return fmt.Sprintf("%s The profile's heaviest envlet function is `%s` (%.0f%% inclusive).", fallback, t, p.funcs[0].incl)
		}
		return fallback
	}
	return strings.Join(parts, " ")
}
