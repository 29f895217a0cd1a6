package e2e

import (
	"bytes"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// TestAuditFlushedOnStop: every serve the agent answered before SIGTERM
// has its audit record in audit.log once the agent has exited, though
// serve records are written in batches by a writer of their own.
func TestAuditFlushedOnStop(t *testing.T) {
	a := startAgent(t, "")
	uid := freeUID(t)
	a.cli("project", "create", "p")
	a.register(map[string]any{"id": "flush", "user": "u", "project": "p", "match": map[string]any{"uid": uid},
		"runtime": map[string]string{"FLUSH_V": "canary-flush-1"}})
	const n = 25
	for range n {
		if env, r := a.launchEnv(uid, uid); env["FLUSH_V"] != "canary-flush-1" {
			t.Fatalf("launch: %s", r)
		}
	}
	a.stop()
	served := 0
	for _, l := range a.auditLines() {
		if l.Action == "serve" && l.Workload == "flush" {
			if l.HMACs["FLUSH_V"] == "" || l.UID == nil || *l.UID != int64(uid) {
				t.Errorf("serve record without its HMAC or uid: %+v", l)
			}
			served++
		}
	}
	if served != n {
		t.Fatalf("%d serve records in audit.log after the stop, want %d", served, n)
	}
	a.noCanary("canary-flush-1")
}

// TestLauncherRetriesBusyAgent: with every connection the agent allows
// (max_conns) held, a launcher is refused with TOO_MANY_CONNECTIONS and
// keeps trying within ENVLET_RETRY; once a connection closes it gets its
// environment and the program runs. With ENVLET_RETRY=0 it gives up at
// once, and a caller that is not registered is refused once, not retried.
func TestLauncherRetriesBusyAgent(t *testing.T) {
	a := startAgentConf(t, "max_conns = 3\n", "")
	u := freeUIDs(t, 4)
	uid, holder, other, stranger := u[0], u[1], u[2], u[3]
	a.cli("project", "create", "p")
	a.register(map[string]any{"id": "busy", "user": "u", "project": "p", "match": map[string]any{"uid": uid},
		"runtime": map[string]string{"BUSY_V": "canary-busy-1"}})

	// Four silent connections: three hold every slot, the fourth is
	// refused (so all three are counted).
	release := flood(t, a.workSock, holder, 4, 1, "silent")
	defer release()

	if r := a.runAs(other, other, "", []string{"ENVLET_RETRY=0"}, bins.exec, "--", "true"); r.code != 125 || !strings.Contains(r.stderr, "TOO_MANY_CONNECTIONS") {
		t.Fatalf("ENVLET_RETRY=0 with the socket full: %s", r)
	}

	cmd := exec.Command(bins.exec, "--", "env")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "ENVLET_SOCKET=" + a.workSock, "ENVLET_RETRY=120"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The agent refused it (it logs a uid's first refusal) ...
	a.waitLog("code=TOO_MANY_CONNECTIONS uid="+uidName(uid), 1)
	// ... and once the slots free, a retry gets in.
	release()
	err := cmd.Wait()
	a.record("envlet-exec -- env (retried)", errb.String())
	if err != nil || !strings.Contains(out.String(), "BUSY_V=canary-busy-1\n") {
		t.Fatalf("the retrying launcher: %v\nstdout: %s\nstderr: %s", err, out.String(), errb.String())
	}

	// Not registered: refused once, not retried, whatever ENVLET_RETRY says.
	if r := a.runAs(stranger, stranger, "", []string{"ENVLET_RETRY=120"}, bins.exec, "--", "true"); r.code != 125 || !strings.Contains(r.stderr, "WORKLOAD_UNKNOWN") {
		t.Fatalf("an unregistered caller: %s", r)
	}
	refusals := 0
	for _, l := range a.auditLines() {
		if l.Action == "refuse" && l.UID != nil && *l.UID == int64(stranger) {
			refusals++
		}
	}
	if refusals != 1 {
		t.Fatalf("%d refusals of the unregistered caller in the audit log, want 1 (no retry)", refusals)
	}
	a.noCanary("canary-busy-1")
}
