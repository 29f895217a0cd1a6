package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// TestAccountErrorCodes drives every rule of docs/design.md §1 through the CLI and
// checks the code, the exit status, and that nothing stored changed.
func TestAccountErrorCodes(t *testing.T) {
	a := startAgent(t, "")
	a.cli("env", "create", "--user", "alice", "KEEP", "kept-value")
	big := strings.Repeat("x", 32<<10+1)
	for _, tt := range []struct {
		name  string
		args  []string
		stdin string
		code  string
	}{
		{"InvalidNameDigit", []string{"env", "set", "--user", "alice", "1BAD", "v"}, "", "ENV_VAR_INVALID_NAME"},
		{"InvalidNameDash", []string{"env", "set", "--user", "alice", "BAD-NAME", "v"}, "", "ENV_VAR_INVALID_NAME"},
		{"InvalidNameLong", []string{"env", "set", "--user", "alice", strings.Repeat("N", 257), "v"}, "", "ENV_VAR_INVALID_NAME"},
		{"ReservedExact", []string{"env", "set", "--user", "alice", "API_KEY", "v"}, "", "ENV_VAR_RESERVED_NAME"},
		{"ReservedMaterial", []string{"env", "set", "--user", "alice", "MATERIAL_DIRECTORY", "v"}, "", "ENV_VAR_RESERVED_NAME"},
		{"ReservedPrefixHops", []string{"env", "create", "--user", "alice", "HOPSWORKS_HOST", "v"}, "", "ENV_VAR_RESERVED_NAME"},
		{"ReservedPrefixEnvlet", []string{"env", "set", "--user", "alice", "ENVLET_SOCKET", "v"}, "", "ENV_VAR_RESERVED_NAME"},
		{"ReservedProject", []string{"project", "env", "set", "p1", "PROJECT_ID", "v"}, "", "ENV_VAR_RESERVED_NAME"},
		{"NulByte", []string{"env", "set", "--user", "alice", "NUL", "--value-stdin"}, "a\x00b", "ENV_VAR_INVALID_VALUE"},
		{"TooLarge", []string{"env", "set", "--user", "alice", "BIG", "--value-stdin"}, big, "ENV_VAR_INVALID_VALUE"},
		{"AlreadyExists", []string{"env", "create", "--user", "alice", "KEEP", "other"}, "", "ENV_VAR_ALREADY_EXISTS"},
		{"UpdateMissing", []string{"env", "update", "--user", "alice", "NOPE", "v"}, "", "ENV_VAR_NOT_FOUND"},
		{"DeleteMissing", []string{"env", "delete", "--user", "alice", "NOPE"}, "", "ENV_VAR_NOT_FOUND"},
		{"ProjectVarMissing", []string{"project", "env", "delete", "p1", "NOPE"}, "", "ENV_VAR_NOT_FOUND"},
		{"ProjectMissing", []string{"project", "env", "set", "nope", "A", "v"}, "", "PROJECT_NOT_FOUND"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "ReservedProject" || tt.name == "ProjectVarMissing" {
				a.runAs(0, 0, "", nil, bins.envlet, "project", "create", "p1")
			}
			r := a.runAs(0, 0, tt.stdin, nil, bins.envlet, tt.args...)
			if r.code == 0 || !strings.HasPrefix(r.stderr, "envlet: "+tt.code+": ") {
				t.Fatalf("want envlet: %s: …, got %s", tt.code, r)
			}
		})
	}
	if got := a.cli("env", "get", "--user", "alice", "KEEP"); got != "kept-value\n" {
		t.Fatalf("after refused writes KEEP = %q, want kept-value", got)
	}
	list := a.cli("env", "list", "--user", "alice", "--json")
	var vars []map[string]any
	json.Unmarshal([]byte(list), &vars)
	if len(vars) != 1 {
		t.Fatalf("refused writes stored something: %s", list)
	}
	if strings.Contains(a.log.String()+a.transcript.String(), strings.Repeat("x", 64)) {
		t.Error("a refused value reached an output")
	}
}

func TestAccountSDKSurface(t *testing.T) {
	a := startAgent(t, "")
	// get of a missing name: nothing, exit 0 (as the SDK).
	if r := a.cliAs(0, "env", "get", "--user", "alice", "MISSING"); r.code != 0 || r.stdout != "" {
		t.Fatalf("get missing: %s", r)
	}
	a.cli("env", "create", "--user", "alice", "A", "1")
	a.cli("env", "set", "--user", "alice", "A", "2") // set is an upsert
	a.cli("env", "set", "--user", "alice", "A", "2") // and idempotent
	a.cli("env", "update", "--user", "alice", "A", "3")
	a.cli("env", "set", "--user", "alice", "B", "b")
	if got := a.cli("env", "get", "--user", "alice", "A"); got != "3\n" {
		t.Fatalf("get A = %q", got)
	}
	if got := a.cli("env", "list", "--user", "alice"); got != "A=3\nB=b\n" {
		t.Fatalf("list = %q", got)
	}
	out := a.cli("env", "delete-all", "--user", "alice")
	if !strings.Contains(out, "2") {
		t.Fatalf("delete-all said %q", out)
	}
	if got := a.cli("env", "list", "--user", "alice", "--json"); strings.TrimSpace(got) != "[]" {
		t.Fatalf("after delete-all: %q", got)
	}
}

func TestAccountLimit(t *testing.T) {
	a := startAgent(t, "")
	for i := 0; i < 64; i++ {
		a.cli("env", "set", "--user", "alice", fmt.Sprintf("V%02d", i), "x")
	}
	r := a.cliAs(0, "env", "set", "--user", "alice", "V64", "x")
	if r.code == 0 || !strings.Contains(r.stderr, "ENV_VAR_LIMIT_EXCEEDED") {
		t.Fatalf("65th variable: %s", r)
	}
	// Updating one of the 64 is not a new variable.
	a.cli("env", "set", "--user", "alice", "V00", "y")
	// Another user has a limit of their own.
	a.cli("env", "set", "--user", "bob", "V00", "x")
	a.cli("env", "delete", "--user", "alice", "V01")
	a.cli("env", "create", "--user", "alice", "V64", "x")
}

// TestOwnAccountOnly: a user who is not an admin manages their own account
// (named by their uid here: the uid has no passwd entry) and nothing else.
func TestOwnAccountOnly(t *testing.T) {
	a := startAgent(t, "")
	uid := freeUID(t)
	if r := a.cliAs(uid, "env", "set", "MINE", "m"); r.code != 0 {
		t.Fatalf("own set: %s", r)
	}
	if got := a.cli("env", "get", "--user", uidName(uid), "MINE"); got != "m\n" {
		t.Fatalf("root reads %s's MINE = %q", uidName(uid), got)
	}
	for _, args := range [][]string{
		{"env", "set", "--user", "alice", "X", "v"},
		{"env", "list", "--user", "alice"},
		{"project", "create", "p"},
		{"workload", "list"},
	} {
		r := a.cliAs(uid, args...)
		if args[1] == "list" && args[0] == "workload" {
			// Listing is allowed; it shows only the caller's own workloads.
			if r.code != 0 || strings.Contains(r.stdout, "alice") {
				t.Errorf("workload list as %d: %s", uid, r)
			}
			continue
		}
		if r.code == 0 || !strings.Contains(r.stderr, "PERMISSION_DENIED") {
			t.Errorf("%v as uid %d: %s", args, uid, r)
		}
	}
}
