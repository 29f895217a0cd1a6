// Package gen makes the variables the benchmarks register and serve, the
// same for the agent and the floor server so both send frames of one size.
package gen

import (
	"fmt"
	"sort"

	"github.com/envlet/envlet/agent/wire"
)

// PlatformPath is the PATH the agent in -dev serves as its platform default;
// the floor server sends it too, so its frames match the agent's in size.
const PlatformPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// ValueBytes is the length of every generated value.
const ValueBytes = 32

// Vars returns n variables BENCH_V000… for workload seed: names the same for
// every workload, values distinct per workload (so nothing is shared), each
// ValueBytes of printable text.
func Vars(seed, n int) map[string]string {
	m := make(map[string]string, n)
	x := uint64(seed)*0x9E3779B97F4A7C15 + 1
	for i := 0; i < n; i++ {
		b := make([]byte, ValueBytes)
		for j := range b {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			b[j] = "abcdefghijklmnopqrstuvwxyz0123456789"[x%36]
		}
		m[Name(i)] = string(b)
	}
	return m
}

// Name is the i-th generated variable's name.
func Name(i int) string { return fmt.Sprintf("BENCH_V%03d", i) }

// EnvFrame is the Env frame the agent serves a workload registered with
// Vars(seed, n) as its runtime layer and no other layer: those variables and
// the platform PATH, sorted by name.
func EnvFrame(seed, n int, rev uint64) []byte {
	vars := Vars(seed, n)
	vars["PATH"] = PlatformPath
	names := make([]string, 0, len(vars))
	for k := range vars {
		names = append(names, k)
	}
	sort.Strings(names)
	entries := make([]wire.Entry, len(names))
	for i, k := range names {
		entries[i] = wire.Entry{Name: k, Value: []byte(vars[k])}
	}
	return wire.AppendEnv(nil, rev, entries)
}
