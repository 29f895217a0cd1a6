package main

import (
	"strings"
	"testing"
)

// envlet status exits 3 when the agent answers but is degraded, printing
// the status first and the reasons on stderr; a health check tells that
// from an agent it cannot reach (1).
func TestStatusDegraded(t *testing.T) {
	for _, tt := range []struct {
		name, reply, why string
		code             int
	}{
		{"Healthy", `{"backend":"etcd","connected":true,"stale_seconds":0,"memory_locked":true}`, "", 0},
		{"OldAgentWithoutFields", `{"backend":"local","revision":3}`, "", 0},
		{"BackendAway", `{"backend":"etcd","connected":false,"stale_seconds":42,"memory_locked":true}`,
			"backend not connected, data stale for 42 s", 3},
		{"NeverCurrent", `{"backend":"etcd","connected":false,"stale_seconds":-1}`,
			"backend not connected, data never known current", 3},
		{"LocksFailed", `{"backend":"local","connected":true,"memory_locked":false}`,
			"values not locked in memory (mlock failed)", 3},
		{"MissingKeys", `{"backend":"etcd","connected":true,"missing_keys":"k2,k3"}`,
			"records sealed with keys this node lacks: k2,k3", 3},
		{"SnapshotError", `{"backend":"etcd","connected":true,"snapshot_error":"open /x: read-only file system"}`,
			"the backend snapshot cannot be written", 3},
		{"AuditError", `{"backend":"local","connected":true,"audit_error":"write /var/log/envlet/audit.log: no space left on device","audit_lost_records":3}`,
			"the audit log cannot be written (admin changes are refused)", 3},
		{"AuditRecovered", `{"backend":"local","connected":true,"audit_lost_records":3}`, "", 0},
		{"Both", `{"backend":"etcd","connected":false,"stale_seconds":5,"memory_locked":false}`,
			"backend not connected, data stale for 5 s; values not locked in memory (mlock failed)", 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, args := range [][]string{{"status"}, {"status", "--json"}} {
				s := startStub(t, 200, tt.reply)
				out, errOut, code := runCLI(t, "", append([]string{"--socket", s.socket}, args...)...)
				if code != tt.code {
					t.Errorf("%s: exit %d, want %d (stderr %q)", args, code, tt.code, errOut)
				}
				if !strings.Contains(out, "backend") {
					t.Errorf("%s: the status is not printed: %q", args, out)
				}
				want := ""
				if tt.why != "" {
					want = "envlet: DEGRADED: " + tt.why + "\n"
				}
				if errOut != want {
					t.Errorf("%s: stderr %q, want %q", args, errOut, want)
				}
			}
		})
	}
	// An agent that cannot be reached is 1, not 3.
	_, _, code := runCLI(t, "", "--socket", shortTempDir(t)+"/none.sock", "status")
	if code != 1 {
		t.Errorf("unreachable agent: exit %d, want 1", code)
	}
}
