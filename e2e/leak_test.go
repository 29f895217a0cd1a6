package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// Leaks: canaries in every layer, then (1) every output searched and (2)
// the agent's memory read as root after they are deleted, copies counted.

// memRegion is one mapping of a process, as /proc/PID/smaps lists it.
type memRegion struct {
	start, end uint64
	perms      string
	name       string
	flags      string // VmFlags
}

// class names where a copy lies: the cache's locked chunks (MADV_DONTDUMP:
// "dd"), the Go heap and other anonymous memory, the binary's data, a stack.
func (r memRegion) class() string {
	switch {
	case strings.Contains(" "+r.flags+" ", " dd "):
		return "cache"
	case r.name == "":
		return "heap"
	case r.name == "[stack]":
		return "stack"
	case strings.HasPrefix(r.name, "/"):
		return "binary"
	}
	return r.name
}

func memRegions(t *testing.T, pid int) []memRegion {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []memRegion
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		fields := strings.Fields(l)
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && len(fields[1]) == 4 {
			lo, hi, _ := strings.Cut(fields[0], "-")
			s, _ := strconv.ParseUint(lo, 16, 64)
			e, _ := strconv.ParseUint(hi, 16, 64)
			r := memRegion{start: s, end: e, perms: fields[1]}
			if len(fields) >= 6 {
				r.name = strings.Join(fields[5:], " ")
			}
			out = append(out, r)
			continue
		}
		if rest, ok := strings.CutPrefix(l, "VmFlags:"); ok && len(out) > 0 {
			out[len(out)-1].flags = strings.TrimSpace(rest)
		}
	}
	return out
}

// countInMemory reads every readable mapping of pid through /proc/PID/mem
// and counts each needle, by class of region.
func countInMemory(t *testing.T, pid int, needles []string) map[string]map[string]int {
	t.Helper()
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Skipf("cannot read the agent's memory: %v", err)
	}
	defer mem.Close()
	out := map[string]map[string]int{}
	for _, n := range needles {
		out[n] = map[string]int{}
	}
	for _, r := range memRegions(t, pid) {
		if r.perms[0] != 'r' || r.name == "[vvar]" || r.name == "[vsyscall]" {
			continue
		}
		buf := make([]byte, r.end-r.start)
		n, _ := mem.ReadAt(buf, int64(r.start))
		buf = buf[:n]
		for _, needle := range needles {
			if c := bytes.Count(buf, []byte(needle)); c > 0 {
				out[needle][r.class()] += c
			}
			if os.Getenv("ENVLET_LEAK_DEBUG") != "" {
				// Where each copy sits: the bytes around it say which
				// structure holds it (a request, a JSON buffer, a string).
				for off := 0; ; {
					i := bytes.Index(buf[off:], []byte(needle))
					if i < 0 {
						break
					}
					i += off
					lo, hi := max(0, i-80), min(len(buf), i+len(needle)+40)
					t.Logf("%s @%x %s: %q", needle, r.start+uint64(i), r.class(), buf[lo:hi])
					off = i + 1
				}
			}
		}
	}
	return out
}

func memReport(counts map[string]map[string]int) string {
	var b strings.Builder
	names := make([]string, 0, len(counts))
	for n := range counts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "  %-28s", n)
		total := 0
		classes := make([]string, 0)
		for c, k := range counts[n] {
			classes = append(classes, fmt.Sprintf("%s %d", c, k))
			total += k
		}
		sort.Strings(classes)
		fmt.Fprintf(&b, " total %d (%s)\n", total, strings.Join(classes, ", "))
	}
	return b.String()
}

// TestDeletedCanariesInMemory sets a canary in every layer the store holds,
// has them served, listed, revealed and explained, deletes them all, and
// then reads the agent's memory: the cache (locked chunks) must hold no
// copy; copies elsewhere are counted and reported.
func TestDeletedCanariesInMemory(t *testing.T) {
	a := startAgent(t, "")
	can := map[string]string{
		"account": "canary-mem-account-1b7e", "project": "canary-mem-project-9d21", "group": "canary-mem-group-4a0c",
		"runtime": "canary-mem-runtime-e3f5", "execution": "canary-mem-exec-70ab", "secret": "canary-mem-secret-c6d8",
	}
	var all []string
	for _, v := range can {
		all = append(all, v)
	}
	// One value is only written and deleted, never shown: what is left of
	// it is what the write path leaves.
	const writeOnly = "canary-mem-writeonly-58e3"
	a.cli("env", "set", "--user", "bob", "BOB_PASSWORD", writeOnly)
	a.cli("env", "delete", "--user", "bob", "BOB_PASSWORD")
	// The same for a multi-line value: it travels JSON-escaped ("\n"), so
	// every unescaped copy in the agent is one its decoding made.
	const multiLine = "canary-mem-multiline-3f9a\ncanary-mem-line2-c01d"
	a.runAs(0, 0, multiLine, nil, bins.envlet, "env", "set", "--user", "bob", "BOB_PEM", "--value-stdin")
	a.cli("env", "delete", "--user", "bob", "BOB_PEM")
	a.cli("project", "create", "p")
	a.cli("project", "add-member", "p", "alice")
	a.cli("env", "set", "--user", "alice", "DB_PASSWORD", can["account"])
	a.cli("project", "env", "set", "p", "PROJ_VAR", can["project"])
	a.cli("group", "create", "g")
	a.cli("group", "set", "g", "GROUP_VAR", can["group"])
	a.cli("group", "assign", "g", "p")
	a.cli("secret", "create", "--project", "p", "S", can["secret"])
	a.cli("project", "env", "set", "p", "FROM_S", "--from-secret", "S")
	reg := filepath.Join(a.dir, "mem.json")
	os.WriteFile(reg, []byte(`{"id":"mem","user":"alice","project":"p","match":{"uid":`+uidName(a.uid("w"))+`},"runtime":{"RT":"`+can["runtime"]+`"},"execution":{"EX":"`+can["execution"]+`"}}`), 0o600)
	a.cli("workload", "register", reg)
	os.Remove(reg)
	for i := 0; i < 3; i++ {
		env, r := a.launchEnv(a.uid("w"), a.uid("w"))
		if env["DB_PASSWORD"] != can["account"] || env["GROUP_VAR"] != can["group"] || env["EX"] != can["execution"] {
			t.Fatalf("the workload did not get the canaries: %s", r)
		}
	}
	a.runAs(0, 0, "", nil, bins.envlet, "env", "list", "--user", "alice", "--reveal")
	a.runAs(0, 0, "", nil, bins.envlet, "explain", "--workload", "mem", "--reveal")
	a.runAs(0, 0, "", nil, bins.envlet, "group", "show", "g", "--reveal")
	pid := a.cmd.Process.Pid
	t.Logf("copies while the canaries are live:\n%s", memReport(countInMemory(t, pid, all)))

	a.cli("workload", "delete", "mem")
	a.cli("project", "env", "delete", "p", "FROM_S")
	a.cli("secret", "delete", "--project", "p", "S")
	a.cli("group", "delete", "g")
	a.cli("project", "env", "delete", "p", "PROJ_VAR")
	a.cli("env", "delete", "--user", "alice", "DB_PASSWORD")
	counts := countInMemory(t, pid, append(all, writeOnly, multiLine))
	t.Logf("copies after every canary was deleted:\n%s", memReport(counts))
	for n, by := range counts {
		if by["cache"] > 0 {
			t.Errorf("%s: %d copies left in the cache's locked memory after delete", n, by["cache"])
		}
	}
	// The request that carried it may still sit in the HTTP server's pooled
	// read buffer; nothing else may hold it (no decoder buffer, decoded
	// string, encoder buffer or hash block).
	if n := counts[writeOnly]["heap"] + counts[writeOnly]["stack"]; n > 1 {
		t.Errorf("a value only written and deleted has %d copies left", n)
	}
	if n := counts[multiLine]["heap"] + counts[multiLine]["stack"]; n > 0 {
		t.Errorf("a multi-line value only written and deleted has %d unescaped copies left", n)
	}
	a.stop()
	a.noCanary(all...)
}
