package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// heapProfile is what `go tool pprof -top` says of an agentprof heap
// profile: the Go heap in use after a GC, by allocating function.
type heapProfile struct {
	total int64 // bytes in use
	funcs []heapFunc
}

type heapFunc struct {
	name        string
	flat, cum   int64
	flatPercent float64
}

// heapOf starts bench/agentprof (envletd with profiles) on a store of n
// workloads like the load layouts', waits for READY, has it write a heap
// profile (SIGUSR1, after a GC) and reads it.
func (r *runner) heapOf(n int) (*heapProfile, error) {
	prof := bin(r.o.benchBin, "agentprof")
	if _, err := os.Stat(prof); err != nil {
		return nil, fmt.Errorf("no %s", prof)
	}
	dir := filepath.Join(r.work, "heap")
	defer os.RemoveAll(dir)
	if err := writeWorkloads(dir, n, 64, func(int) string { return "bench" }, false); err != nil {
		return nil, err
	}
	out := filepath.Join(r.work, "heap.pb")
	os.Remove(out)
	a, err := startAgentArgs(prof, dir, "-memprofile", out)
	if err != nil {
		return nil, err
	}
	defer a.stop()
	a.cmd.Process.Signal(syscall.SIGUSR1)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if fi, err := os.Stat(out); err == nil && fi.Size() > 0 {
			time.Sleep(200 * time.Millisecond) // let the write finish
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no heap profile after 30 s")
		}
	}
	b, err := exec.Command("go", "tool", "pprof", "-sample_index=inuse_space", "-top", "-nodecount=40", prof, out).Output()
	if err != nil {
		return nil, fmt.Errorf("go tool pprof: %v", errText(err))
	}
	return parsePprofTop(string(b)), nil
}

// parsePprofTop reads `go tool pprof -top` text.
func parsePprofTop(s string) *heapProfile {
	h := &heapProfile{}
	for _, l := range strings.Split(s, "\n") {
		if _, rest, ok := strings.Cut(l, "% of "); ok && strings.HasPrefix(l, "Showing nodes") {
			h.total = parseSize(strings.TrimSuffix(strings.TrimSpace(rest), " total"))
			continue
		}
		f := strings.Fields(l)
		if len(f) < 6 || !strings.HasSuffix(f[1], "%") || !strings.HasSuffix(f[4], "%") {
			continue
		}
		flat, cum := parseSize(f[0]), parseSize(f[3])
		pct, _ := strconv.ParseFloat(strings.TrimSuffix(f[1], "%"), 64)
		name := strings.Join(f[5:], " ")
		name = strings.TrimSuffix(name, " (inline)")
		h.funcs = append(h.funcs, heapFunc{name: strings.TrimPrefix(name, "github.com/envlet/envlet/"), flat: flat, cum: cum, flatPercent: pct})
	}
	return h
}

// parseSize reads pprof's sizes: 173.89MB, 513kB, 12B, 1.2GB.
func parseSize(s string) int64 {
	mult := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"GB", 1 << 30}, {"MB", 1 << 20}, {"kB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(s, u.suf) {
			s, mult = strings.TrimSuffix(s, u.suf), u.m
			break
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0
	}
	return int64(v * float64(mult))
}

func (h *heapProfile) markdown() string {
	if h == nil {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "<details><summary>Where the Go heap goes with 10,000 workloads (go tool pprof, %s in use after a GC)</summary>\n\n", mib(h.total))
	b.WriteString("| allocated by | in use (flat) | share |\n|---|---|---|\n")
	for i, f := range h.funcs {
		if i == 10 || f.flat == 0 {
			break
		}
		fmt.Fprintf(&b, "| `%s` | %s | %.0f%% |\n", f.name, mib(f.flat), f.flatPercent)
	}
	b.WriteString("\nRe-run by hand: `bin/bench/agentprof -memprofile heap.pb -dev -dir DIR`, `kill -USR1 PID`, `go tool pprof -top -sample_index=inuse_space bin/bench/agentprof heap.pb`.\n\n</details>\n\n")
	return b.String()
}

// A known heap user: what it keeps per variable and how to keep less.
var heapSpots = []hotSpot{
	{"(*auditLog).sums", "the serve records' HMAC cache keeps the encoded HMACs of recently served environments (`auditLog.sums`, `servedHMACs`, at most 4 MiB: agent/auditjson.go)",
		"lower `maxServedHMACBytes`, or record one HMAC over the whole frame per serve (an audit format change)"},
	{"hex.EncodeToString", "", ""}, // counted with sums
	{"(*Agent).ownVars", "each runtime and execution variable of each workload is a Go string name plus a `*cache.Buf` (`Agent.ownVars`)",
		"pack a workload's own variables into one locked buffer (names and values, as the Env frame already is) and keep offsets"},
	{"encoding/json.(*decodeState)", "the value strings decoded from each registration stay reachable after they are wiped: `putWorkload` (agent/registration.go) copies the Registration (`w.reg = *r`) before `r.wipeValues()` clears `r.wipe`, so `w.reg.wipe` keeps every decoded value string, zeroed but never freed, for the workload's life (with the slice `valueStrings` built)",
		"set `w.reg.wipe = nil` after the copy (or copy the registration after wiping)"},
	{"cache.(*Pool).Alloc", "each locked buffer has a `cache.Buf` header on the Go heap (`Pool.Alloc`): one per workload layer, one per stored value",
		"a header kept inside the workload's record, or a slot handle instead of a pointer"},
	{"(*workloadIndex).add", "the index that narrows matching keeps a map of its own per uid (`workloadIndex.byUID`, agent/identity.go): one small map per workload when each workload has its own uid",
		"a slice per uid (most uids hold one workload)"},
	{"(*Agent).putWorkload", "each workload's record (`workload`, agent/registration.go: its registration's id, user, project and match, digest, revisions, about 320 bytes)",
		"keep only the fields serving needs (not the copied Registration's maps, issued token and wipe list)"},
	{"(*dirWatch).rescan", "workloads.d's bookkeeping per file: its path and digest (agent/workloadsdir.go)", "key by file name rather than full path"},
}

// heapCause explains the heap by its known users, largest first.
func heapCause(h *heapProfile) string {
	if h == nil || h.total == 0 {
		return ""
	}
	share := func(s string) int64 {
		var n int64
		for _, f := range h.funcs {
			if strings.Contains(f.name, s) {
				n += f.flat
			}
		}
		return n
	}
	var parts []string
	for _, s := range heapSpots {
		if s.why == "" {
			continue
		}
		n := share(s.fn)
		switch s.fn {
		case "(*auditLog).sums":
			n += share("hex.EncodeToString")
		case "encoding/json.(*decodeState)":
			if share("valueStrings") == 0 {
				continue // held by something else: no known cause
			}
			n += share("valueStrings")
		}
		if n*10 >= h.total {
			parts = append(parts, fmt.Sprintf("%s (%.0f%% of the heap): %s. Suggested fix: %s.", mib(n), 100*float64(n)/float64(h.total), s.why, s.fix))
		}
	}
	return strings.Join(parts, " ")
}
