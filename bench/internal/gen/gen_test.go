package gen

import (
	"bytes"
	"sort"
	"testing"

	"github.com/envlet/envlet/agent/wire"
)

func TestVars(t *testing.T) {
	a, b := Vars(1, 64), Vars(2, 64)
	if len(a) != 64 || len(b) != 64 {
		t.Fatalf("len = %d, %d; want 64", len(a), len(b))
	}
	same := 0
	for k, v := range a {
		if len(v) != ValueBytes {
			t.Errorf("%s has %d bytes, want %d", k, len(v), ValueBytes)
		}
		if b[k] == v {
			same++
		}
	}
	if same > 0 {
		t.Errorf("%d values shared by two workloads; want every value distinct", same)
	}
	if again := Vars(1, 64); again[Name(7)] != a[Name(7)] {
		t.Error("Vars is not deterministic")
	}
}

// EnvFrame is what the agent serves a workload whose only own layer is
// Vars: the variables and the platform PATH, sorted, in one valid frame.
func TestEnvFrame(t *testing.T) {
	for _, n := range []int{0, 20, 200} {
		f := EnvFrame(3, n, 9)
		typ, payload, err := wire.ReadFrame(bytes.NewReader(f), nil)
		if err != nil || typ != wire.TypeEnv {
			t.Fatalf("n=%d: ReadFrame: %v, %v", n, typ, err)
		}
		rev, entries, err := wire.DecodeEnv(payload)
		if err != nil || rev != 9 || len(entries) != n+1 {
			t.Fatalf("n=%d: DecodeEnv: rev %d, %d entries, %v; want rev 9, %d entries", n, rev, len(entries), err, n+1)
		}
		if !sort.SliceIsSorted(entries, func(i, j int) bool { return entries[i].Name < entries[j].Name }) {
			t.Errorf("n=%d: entries not sorted by name", n)
		}
		vars := Vars(3, n)
		for _, e := range entries {
			want, ok := vars[e.Name]
			if e.Name == "PATH" {
				want, ok = PlatformPath, true
			}
			if !ok || string(e.Value) != want || e.Unset {
				t.Errorf("n=%d: entry %s=%q, want %q", n, e.Name, e.Value, want)
			}
		}
	}
}
