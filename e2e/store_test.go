package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLocalStoreTornLog: an agent whose local store log ends in a record
// cut short (a crash in the middle of a commit's write) starts, warns, and
// serves every commit before it; commits go on after it.
func TestLocalStoreTornLog(t *testing.T) {
	if e2eBackend == "etcd" {
		t.Skip("local store only")
	}
	a := startAgent(t, "")
	a.cli("env", "set", "--user", "alice", "FIRST", "one")
	a.cli("env", "set", "--user", "alice", "SECOND", "two")
	a.stop()
	log := filepath.Join(a.stateDir, "state.log")
	fi, err := os.Stat(log)
	if err != nil {
		t.Fatalf("the local store has no log: %v", err)
	}
	// Cut the last record short: as if the agent died writing SECOND.
	if err := os.Truncate(log, fi.Size()-7); err != nil {
		t.Fatal(err)
	}
	a.start()
	const warning = "local store: cut an unfinished commit off the end of its log"
	if !strings.Contains(a.log.String(), warning) {
		t.Fatalf("no warning about the torn record; log:\n%s", a.log.String())
	}
	if got := a.cli("env", "get", "--user", "alice", "FIRST"); strings.TrimSpace(got) != "one" {
		t.Fatalf("FIRST = %q after the torn record, want one", got)
	}
	if got := a.cli("env", "get", "--user", "alice", "SECOND"); strings.TrimSpace(got) != "" {
		t.Fatalf("SECOND = %q, from a commit that never finished", got)
	}
	a.cli("env", "set", "--user", "alice", "THIRD", "three")
	a.restart()
	if strings.Contains(a.log.String(), warning) {
		t.Fatalf("warned again after the log was repaired; log:\n%s", a.log.String())
	}
	if got := a.cli("env", "get", "--user", "alice", "THIRD"); strings.TrimSpace(got) != "three" {
		t.Fatalf("THIRD = %q after a restart", got)
	}
}
