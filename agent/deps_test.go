package agent

import (
	"os/exec"
	"strings"
	"testing"
)

// The agent's packages keep to an import graph (after tailscaled's and the
// launcher's deps tests): each rule below is a boundary the layout depends
// on, checked against what `go list -deps` says each package links.
const module = "github.com/envlet/envlet/"

var depRules = []struct {
	pkg string
	// own lists the packages of this module pkg may link (besides itself);
	// nil: none.
	own []string
	// forbidden standard or outside packages (prefix match on a path).
	forbidden []string
	// stdOnly: nothing from outside the standard library.
	stdOnly bool
}{
	// The workload protocol: the launcher links it, so standard library only.
	{pkg: "agent/wire", stdOnly: true, forbidden: []string{"net/http", "encoding/json"}},
	// The admin contract: types and codes, no transport.
	{pkg: "agent/api", own: []string{"agent/wire"}, stdOnly: true, forbidden: []string{"net/http"}},
	// The admin client: the contract and the standard library.
	{pkg: "agent/api/client", own: []string{"agent/api", "agent/wire"}, stdOnly: true},
	// Leaves under agent/internal: no sibling, no agent, no HTTP.
	{pkg: "agent/internal/memtrim", stdOnly: true, forbidden: []string{"net/http", "net"}},
	{pkg: "agent/internal/regdir", forbidden: []string{"net/http"}},
}

func TestAgentDeps(t *testing.T) {
	t.Parallel()
	for _, r := range depRules {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{.Standard}}", "./"+strings.TrimPrefix(r.pkg, "agent/")).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", r.pkg, err, out)
		}
		allowed := map[string]bool{module + r.pkg: true}
		for _, o := range r.own {
			allowed[module+o] = true
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			dep, std, _ := strings.Cut(line, " ")
			switch {
			case strings.HasPrefix(dep, module):
				if !allowed[dep] {
					t.Errorf("%s imports %s; of this module it may import only %v", r.pkg, dep, r.own)
				}
			case std != "true" && r.stdOnly:
				t.Errorf("%s imports %s; it may use the standard library only", r.pkg, dep)
			}
			for _, f := range r.forbidden {
				if dep == f || strings.HasPrefix(dep, f+"/") {
					t.Errorf("%s imports %s; it must not", r.pkg, dep)
				}
			}
		}
	}
}
