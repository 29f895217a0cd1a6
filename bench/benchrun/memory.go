package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/envlet/envlet/bench/internal/gen"
)

// memory reads the agents' resident and locked memory: with no workload,
// 1,000 and 10,000 workloads of 64 variables.
func (r *runner) memory() error {
	type row struct {
		name      string
		workloads int
		st        map[string]int64 // at rest: after READY, before any request
		status    agentStatus
		after     map[string]int64 // after the load section, once quiet (nil without it)
	}
	var rows []row
	var agents []*agentProc
	for _, l := range []struct {
		layout string
		name   string
		n      int
	}{{"empty", "no workload", 0}, {"load1k", "1,000 workloads × 64 variables", 1000}, {"load10k", "10,000 workloads × 64 variables", 10000}} {
		a, err := r.agent(l.layout)
		if err != nil {
			return err
		}
		agents = append(agents, a)
		rows = append(rows, row{name: l.name, workloads: l.n, st: a.rest, status: a.restStatus})
	}
	if r.loaded {
		// The agent hands a burst's memory back once its workload socket
		// has been quiet for a whole check (agent/memtrim.go, every 5 s):
		// wait out two checks.
		time.Sleep(11 * time.Second)
		for i, a := range agents {
			st, err := procStatus(a.pid())
			if err != nil {
				return err
			}
			rows[i].after = st
		}
	}
	base, big := rows[0], rows[len(rows)-1]
	mid := rows[1]
	vars := int64(big.workloads) * 64
	perVar := float64(big.st["VmRSS"]-base.st["VmRSS"]) / float64(vars)
	slope := float64(big.st["VmRSS"]-mid.st["VmRSS"]) / float64(int64(big.workloads-mid.workloads)*64)
	lockedPerVar := float64(big.status.LockedBytes-base.status.LockedBytes) / float64(vars)
	stateSize := dirSize(filepath.Join(r.work, "load10k", "workloads.d"))

	// Where the heap goes: the same store in agentprof (envletd with Go
	// profiles), profiled after READY.
	heap, herr := r.heapOf(big.workloads)
	if herr != nil {
		logf("heap profile: %v", herr)
	}
	var b strings.Builder
	b.WriteString("## Memory\n\n")
	b.WriteString("The agent's resident set (VmRSS, and its peak VmHWM) and locked memory (VmLck) from /proc/PID/status, with the cache's own count of locked bytes ")
	b.WriteString("(`envlet status --json`: `memory_locked`, `locked_bytes`), for agents holding no workload, 1,000 and 10,000 workloads, each with 64 runtime variables of ")
	fmt.Fprintf(&b, "%d-byte values under %d-byte names (registered as files in workloads.d; ", gen.ValueBytes, len(gen.Name(0)))
	fmt.Fprintf(&b, "the 10,000 files hold %s of JSON). ", mib(stateSize))
	b.WriteString("**At rest** is read 0.2 s after READY, before any request: what holding the workloads costs, the figure the goal is about. ")
	if r.loaded {
		b.WriteString("**After load** is read once the load section has driven the same agents (up to 512 clients at once) and their workload sockets have been quiet for 11 s: " +
			"what a burst leaves behind once the agent has handed back what it can (it returns the Go runtime's free memory after a quiet check, agent/memtrim.go). ")
	}
	b.WriteString("The baseline is the same agent with no workload.\n\n")
	b.WriteString("Re-run: `scripts/bench.sh -only memory` (at rest only) or `-only load,memory`; by hand, `grep -E 'Vm(RSS|HWM|Lck)' /proc/$(pidof envletd)/status` and `envlet status --json`.\n\n")
	b.WriteString("| agent | VmRSS at rest | VmHWM (peak) at rest | VmLck at rest | cache locked_bytes | memory_locked | RSS vs no workload | VmRSS after load | VmHWM after load | VmLck after load |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, x := range rows {
		after := "— | — | —"
		if x.after != nil {
			after = mib(x.after["VmRSS"]) + " | " + mib(x.after["VmHWM"]) + " | " + mib(x.after["VmLck"])
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %v | %s | %s |\n", x.name, mib(x.st["VmRSS"]), mib(x.st["VmHWM"]), mib(x.st["VmLck"]),
			mib(x.status.LockedBytes), x.status.MemoryLocked, ratio(float64(x.st["VmRSS"]), float64(base.st["VmRSS"])), after)
	}
	fmt.Fprintf(&b, "\nPer variable at rest, with 10,000 × 64 = %s variables: **%.0f bytes resident** (RSS over the empty agent's), %.0f bytes between 1,000 and 10,000 workloads, "+
		"%.0f bytes locked (the value, its name's id and its length in the workload's one locked buffer per layer, and slot and chunk slack; names are interned once in the Go heap). The raw data is %d bytes of value and %d of name.\n\n",
		thousands(vars), perVar, slope, lockedPerVar, gen.ValueBytes, len(gen.Name(0)))
	if heap != nil {
		fmt.Fprintf(&b, "Of the 10,000-workload agent's %s resident at rest: %s locked by the cache (VmLck), %s of Go heap in use after a GC (pprof, from a twin agent on the same store), "+
			"and the rest, %s, is the binary's mapped pages (about 13 MiB of them; the no-workload row is mostly that), the Go runtime's headroom (GOGC=100 lets the heap grow to twice what is live before it collects) and stacks.\n\n",
			mib(big.st["VmRSS"]), mib(big.st["VmLck"]), mib(heap.total), mib(max(0, big.st["VmRSS"]-big.st["VmLck"]-heap.total)))
	}
	if big.after != nil {
		fmt.Fprintf(&b, "After load the 10,000-workload agent holds %s resident (%s locked): besides what it holds at rest, the locked chunks that held the Env frames of up to 1,024 requests in flight "+
			"(the cache keeps freed slots for reuse, zeroed), the serve records' HMAC cache (at most 4 MiB, agent/auditjson.go) and the Go runtime's free memory that a quiet check did not hand back.\n\n",
			mib(big.after["VmRSS"]), mib(big.after["VmLck"]))
	}
	b.WriteString(heap.markdown())
	r.rep.section(b.String())
	ok := big.st["VmRSS"] < 64<<20
	r.rep.goal(goalRow{
		what: "Resident memory at rest, 10,000 workloads × 64 variables", figure: mib(big.st["VmRSS"]) + fmt.Sprintf(" (%.0f B/variable)", perVar),
		against: "no workload " + mib(base.st["VmRSS"]), ratio: ratio(float64(big.st["VmRSS"]), float64(base.st["VmRSS"])),
		goal: "< 64 MiB", met: met(ok),
	})
	if big.after != nil {
		r.rep.goal(goalRow{
			what: "Resident memory after the load section (quiet 11 s), 10,000 workloads × 64 variables", figure: mib(big.after["VmRSS"]),
			against: "at rest " + mib(big.st["VmRSS"]), ratio: ratio(float64(big.after["VmRSS"]), float64(big.st["VmRSS"])), goal: "—",
		})
	}
	r.rep.goal(goalRow{
		what: "Locked memory at rest, 10,000 workloads × 64 variables", figure: mib(big.st["VmLck"]) + fmt.Sprintf(" (%.0f B/variable)", lockedPerVar),
		against: "no workload " + mib(base.st["VmLck"]), ratio: "—", goal: "—",
	})
	if !ok {
		why := fmt.Sprintf("Locked memory is %s (%.0f bytes per variable: each workload's own variables packed in one locked buffer per layer; nothing resolved is kept, the Env frame is merged per request).", mib(big.st["VmLck"]), lockedPerVar)
		if heap != nil {
			rest := max(0, big.st["VmRSS"]-big.st["VmLck"]-heap.total)
			why += fmt.Sprintf(" The Go heap holds %s after a GC, %s per workload. The other %s of the resident set is the binary's pages, the runtime's headroom and what the start-up parse left behind (VmHWM, the peak, is %s; the agent calls `debug.FreeOSMemory` once the first load is in). %s",
				mib(heap.total), thousands(heap.total/int64(big.workloads))+" bytes", mib(rest), mib(big.st["VmHWM"]), heapCause(heap))
		}
		r.rep.note("Resident memory with 10,000 workloads is %s (goal: under 64 MiB), %.0f bytes per %d-byte variable. %s", mib(big.st["VmRSS"]), perVar, gen.ValueBytes+len(gen.Name(0)), why)
	}
	return nil
}

func dirSize(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}
