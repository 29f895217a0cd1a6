package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// auditLine is one record of the audit log.
type auditLine struct {
	Time       string            `json:"time"`
	Action     string            `json:"action"`
	UID        *int64            `json:"uid"`
	User       string            `json:"user"`
	PID        int32             `json:"pid"`
	Scope      string            `json:"scope"`
	Name       string            `json:"name"`
	Workload   string            `json:"workload"`
	Revision   int64             `json:"revision"`
	FromSecret string            `json:"from_secret"`
	HMAC       string            `json:"hmac"`
	HMACs      map[string]string `json:"hmacs"`
	Code       string            `json:"code"`
	Reason     string            `json:"reason"`
	Request    string            `json:"request"`
	Socket     string            `json:"socket"`
}

func (a *agentProc) auditLines() []auditLine {
	a.t.Helper()
	f, err := os.Open(a.audit)
	if err != nil {
		a.t.Fatal(err)
	}
	defer f.Close()
	var out []auditLine
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l auditLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			a.t.Fatalf("audit line is not JSON: %v", err)
		}
		if _, err := time.Parse(time.RFC3339Nano, l.Time); err != nil {
			a.t.Errorf("audit line without a time: %s", sc.Text())
		}
		out = append(out, l)
	}
	return out
}

// findAudit returns the last line that match accepts.
func findAudit(lines []auditLine, match func(auditLine) bool) (auditLine, bool) {
	for i := len(lines) - 1; i >= 0; i-- {
		if match(lines[i]) {
			return lines[i], true
		}
	}
	return auditLine{}, false
}

// hmacOf asks the agent (as root) for the audit HMAC of a value.
func (a *agentProc) hmacOf(value string) string {
	a.t.Helper()
	r := a.runAs(0, 0, value+"\n", nil, bins.envlet, "audit", "hmac", "--value-stdin")
	if r.code != 0 || len(strings.TrimSpace(r.stdout)) != 64 {
		a.t.Fatalf("audit hmac: %s", r)
	}
	return strings.TrimSpace(r.stdout)
}

func TestAuditLog(t *testing.T) {
	a := startAgent(t, "")
	u := freeUIDs(t, 3)
	uid, stranger, unregistered := u[0], u[1], u[2]
	a.cli("project", "create", "fraud")
	a.cli("project", "add-member", "fraud", uidName(uid))
	a.register(map[string]any{"id": "w", "user": uidName(uid), "project": "fraud", "match": map[string]any{"uid": uid}})
	for _, args := range [][]string{
		{"env", "set", "API_TOKEN", "canary-audit-1"},
		{"secret", "create", "S", "canary-audit-3"},
		{"env", "set", "FROM_S", "--from-secret", "S"},
	} {
		if r := a.cliAs(uid, args...); r.code != 0 {
			t.Fatalf("%v: %s", args, r)
		}
	}
	a.cli("project", "env", "set", "fraud", "PV", "canary-audit-2")
	a.cli("group", "create", "g")
	a.cli("group", "set", "g", "GV", "canary-audit-4")
	a.cli("group", "assign", "g", "fraud")
	if _, r := a.launchEnv(uid, uid); r.code != 0 {
		t.Fatal(r)
	}
	if r := a.runAs(uid, uid, "", nil, bins.exec, "--get-secret", "S"); r.code != 0 {
		t.Fatal(r)
	}
	a.runAs(uid, uid, "", nil, bins.envlet, "env", "get", "--reveal", "API_TOKEN")
	a.runAs(uid, uid, "", nil, bins.envlet, "secret", "get", "--reveal", "S")
	a.cliAs(stranger, "project", "create", "x")
	a.runAs(unregistered, unregistered, "", nil, bins.exec, "--", "true")
	if r := a.cliAs(stranger, "audit", "hmac", "--file", "/dev/null"); r.code != 1 || !strings.Contains(r.stderr, "PERMISSION_DENIED") {
		t.Errorf("a non-admin computed an audit HMAC: %s", r)
	}
	h := map[string]string{}
	for _, v := range []string{"canary-audit-1", "canary-audit-2", "canary-audit-3", "canary-audit-4"} {
		h[v] = a.hmacOf(v)
	}
	lines := a.auditLines()

	for _, tt := range []struct {
		what  string
		match func(auditLine) bool
		check func(auditLine) bool
	}{
		{"account write by its user, with the value's HMAC",
			func(l auditLine) bool {
				return l.Action == "set" && l.Scope == "user:"+uidName(uid) && l.Name == "API_TOKEN"
			},
			func(l auditLine) bool {
				return l.UID != nil && *l.UID == int64(uid) && l.User == uidName(uid) && l.PID > 0 && l.HMAC == h["canary-audit-1"] && l.Socket == "admin"
			}},
		{"a variable from a secret names the secret, no HMAC",
			func(l auditLine) bool { return l.Action == "set" && l.Name == "FROM_S" },
			func(l auditLine) bool { return l.FromSecret == "S" && l.HMAC == "" }},
		{"project write",
			func(l auditLine) bool { return l.Action == "set" && l.Scope == "project:fraud" && l.Name == "PV" },
			func(l auditLine) bool { return *l.UID == 0 && l.HMAC == h["canary-audit-2"] }},
		{"secret create",
			func(l auditLine) bool {
				return l.Action == "create" && l.Scope == "secret:user:"+uidName(uid) && l.Name == "S"
			},
			func(l auditLine) bool { return l.HMAC == h["canary-audit-3"] }},
		{"group write",
			func(l auditLine) bool { return l.Action == "set" && l.Scope == "group:g" && l.Name == "GV" },
			func(l auditLine) bool { return l.HMAC == h["canary-audit-4"] }},
		{"group assign",
			func(l auditLine) bool { return l.Action == "assign" && l.Scope == "group:g" },
			func(l auditLine) bool { return l.Name == "fraud" }},
		{"env served: revision and the HMAC of every value",
			func(l auditLine) bool { return l.Action == "serve" && l.Workload == "w" && l.Name == "" },
			func(l auditLine) bool {
				return *l.UID == int64(uid) && l.PID > 0 && l.Revision > 0 && l.Socket == "workload" &&
					l.HMACs["API_TOKEN"] == h["canary-audit-1"] && l.HMACs["PV"] == h["canary-audit-2"] &&
					l.HMACs["FROM_S"] == h["canary-audit-3"] && l.HMACs["GV"] == h["canary-audit-4"]
			}},
		{"secret served over the workload socket",
			func(l auditLine) bool { return l.Action == "serve" && l.Name == "S" },
			func(l auditLine) bool {
				return l.Workload == "w" && l.Scope == "secret:user:"+uidName(uid) && l.HMACs["S"] == h["canary-audit-3"] && l.Revision > 0
			}},
		{"reveal of a masked variable",
			func(l auditLine) bool { return l.Action == "reveal" && l.Name == "API_TOKEN" },
			func(l auditLine) bool { return l.Scope == "user:"+uidName(uid) && *l.UID == int64(uid) }},
		{"reveal of a secret",
			func(l auditLine) bool { return l.Action == "reveal" && l.Name == "S" },
			func(l auditLine) bool { return l.Scope == "secret:user:"+uidName(uid) && l.HMAC == h["canary-audit-3"] }},
		{"refusal on the admin socket: pid, uid, reason",
			func(l auditLine) bool { return l.Action == "refuse" && l.Request == "POST /v1/projects" },
			func(l auditLine) bool {
				return *l.UID == int64(stranger) && l.PID > 0 && l.Code == "PERMISSION_DENIED" && l.Reason != "" && l.Socket == "admin"
			}},
		{"refusal of audit hmac",
			func(l auditLine) bool { return l.Action == "refuse" && l.Request == "POST /v1/audit/hmac" },
			func(l auditLine) bool { return *l.UID == int64(stranger) }},
		{"refusal on the workload socket: pid, uid, reason",
			func(l auditLine) bool { return l.Action == "refuse" && l.Socket == "workload" },
			func(l auditLine) bool {
				return *l.UID == int64(unregistered) && l.PID > 0 && l.Code == "WORKLOAD_UNKNOWN" && l.Reason != ""
			}},
		{"an HMAC request is audited",
			func(l auditLine) bool { return l.Action == "hmac" },
			func(l auditLine) bool { return *l.UID == 0 && len(l.HMAC) == 64 }},
	} {
		l, ok := findAudit(lines, tt.match)
		if !ok {
			t.Errorf("no audit line for %s", tt.what)
			continue
		}
		if !tt.check(l) {
			t.Errorf("%s: %+v", tt.what, l)
		}
	}
	// Four different values, four different HMACs.
	if len(map[string]bool{h["canary-audit-1"]: true, h["canary-audit-2"]: true, h["canary-audit-3"]: true, h["canary-audit-4"]: true}) != 4 {
		t.Errorf("HMACs collide: %v", h)
	}
	a.noCanary("canary-audit-")
}

// TestAuditKey: the key is created on first start, 0600, kept across
// restarts (so HMACs stay comparable), and refused when others can read it.
func TestAuditKey(t *testing.T) {
	a := startAgent(t, "")
	key := filepath.Join(a.stateDir, "audit.key")
	fi, err := os.Stat(key)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != 32 {
		t.Fatalf("audit key: %v %v", fi, err)
	}
	before := a.hmacOf("v")
	a.restart()
	if after := a.hmacOf("v"); after != before {
		t.Fatalf("HMAC changed across a restart: %s, then %s", before, after)
	}
	a.stop()
	os.Chmod(key, 0o644)
	out, err := exec.Command(bins.envletd, "-config", a.config).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "audit key") || !strings.Contains(string(out), "chmod 600") {
		t.Fatalf("agent started with a world-readable audit key: %v\n%s", err, out)
	}
	os.Chmod(key, 0o600)
	a.start()
	if got := a.hmacOf("v"); got != before {
		t.Fatalf("HMAC changed: %s, then %s", before, got)
	}
}
