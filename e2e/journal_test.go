package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// journaldPath is where Debian's systemd package puts the journal daemon.
var journaldPath = "/lib/systemd/systemd-journald"

// privateJournald starts systemd-journald in a mount namespace of its own,
// with tmpfs over /run/systemd, /run/log and /var/log/journal, so neither
// its sockets nor its files touch the host's. It returns the daemon's pid:
// a process started under `nsenter -t PID -m` sees that journal, and
// /proc/PID/root shows its files to the test.
func privateJournald(t *testing.T) int {
	t.Helper()
	if _, err := os.Stat(journaldPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing (the systemd package); .ci/run installs it", journaldPath)
		}
		t.Skipf("no %s here (apt-get install systemd)", journaldPath)
	}
	script := `set -e
mkdir -p /run/systemd /run/log /var/log/journal
mount -t tmpfs tmpfs /run/systemd
mount -t tmpfs tmpfs /run/log
mount -t tmpfs tmpfs /var/log/journal
exec ` + journaldPath
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script)
	// journald says READY=1 over sd_notify once its sockets are bound.
	n := listenNotify(t)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+n.path)
	out := newLogBuf()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	for ready := false; !ready; {
		select {
		case m := <-n.msgs:
			ready = strings.Contains("\n"+m+"\n", "\nREADY=1\n")
		case <-done:
			t.Fatalf("journald ended before it was ready:\n%s", out)
		case <-time.After(20 * time.Second):
			t.Fatalf("journald did not say READY=1 in 20 s:\n%s", out)
		}
	}
	sock := filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "root/run/systemd/journal/socket")
	if fi, err := os.Stat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("journald is up but its socket is not there: %v\n%s", err, out)
	}
	return cmd.Process.Pid
}

// journalEntry is the part of `journalctl -o json` output the test reads.
type journalEntry struct {
	Message    string `json:"MESSAGE"`
	Identifier string `json:"SYSLOG_IDENTIFIER"`
	Action     string `json:"ENVLET_AUDIT_ACTION"`
	Priority   string `json:"PRIORITY"`
}

// TestAuditToJournald runs the agent where a journal socket is present and
// reads its audit records back with journalctl: every record reaches the
// journal as the same JSON line the audit file holds, with its action as a
// field of its own, and no value reaches the journal.
func TestAuditToJournald(t *testing.T) {
	jpid := privateJournald(t)
	ns := []string{"nsenter", "-t", strconv.Itoa(jpid), "-m", "--"}

	a := startAgent(t, "")
	a.wrap = ns
	a.restart()
	u := freeUIDs(t, 2)
	uid, unregistered := u[0], u[1]
	a.cli("project", "create", "jrn")
	a.cli("project", "add-member", "jrn", uidName(uid))
	a.register(map[string]any{"id": "wj", "user": uidName(uid), "project": "jrn", "match": map[string]any{"uid": uid}})
	if r := a.cliAs(uid, "env", "set", "JTOKEN", "canary-journal-1"); r.code != 0 {
		t.Fatal(r)
	}
	a.cli("project", "env", "set", "jrn", "JPV", "canary-journal-2")
	env, r := a.launchEnv(uid, uid)
	if r.code != 0 || env["JTOKEN"] != "canary-journal-1" {
		t.Fatalf("launch: %v %s", env, r)
	}
	if r := a.runAs(unregistered, unregistered, "", nil, bins.exec, "--", "true"); r.code == 0 {
		t.Fatalf("an unregistered uid was served: %s", r)
	}
	a.stop()

	// --sync returns once journald has written everything it received
	// before, so every record the agent sent is in the files.
	jctl := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(ns[0], append(ns[1:], append([]string{"journalctl"}, args...)...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("journalctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	jctl("--sync")
	all := jctl("-D", "/run/log/journal", "--no-pager", "-o", "json")
	byAction := map[string][]auditLine{}
	sc := bufio.NewScanner(strings.NewReader(jctl("-D", "/run/log/journal", "--no-pager", "-o", "json", "SYSLOG_IDENTIFIER=envletd-audit")))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e journalEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("journalctl line is not JSON: %v: %s", err, sc.Text())
		}
		var l auditLine
		if err := json.Unmarshal([]byte(e.Message), &l); err != nil {
			t.Fatalf("journal MESSAGE is not an audit record: %v: %q", err, e.Message)
		}
		if e.Action != l.Action {
			t.Errorf("ENVLET_AUDIT_ACTION=%q for a %q record", e.Action, l.Action)
		}
		byAction[l.Action] = append(byAction[l.Action], l)
	}

	if len(byAction["set"]) < 2 {
		t.Errorf("journal holds %d set records, want the 2 writes", len(byAction["set"]))
	}
	served := false
	for _, l := range byAction["serve"] {
		if l.Workload == "wj" && l.HMACs["JTOKEN"] != "" && l.UID != nil && *l.UID == int64(uid) {
			served = true
		}
	}
	if !served {
		t.Errorf("no serve record for workload wj with its HMACs in the journal: %+v", byAction["serve"])
	}
	refused := false
	for _, l := range byAction["refuse"] {
		if l.UID != nil && *l.UID == int64(unregistered) && l.Code != "" {
			refused = true
		}
	}
	if !refused {
		t.Errorf("no refuse record for uid %d in the journal: %+v", unregistered, byAction["refuse"])
	}
	// The file and the journal hold the same records.
	fileCount := map[string]int{}
	for _, l := range a.auditLines() {
		fileCount[l.Action]++
	}
	for action, n := range fileCount {
		if len(byAction[action]) != n {
			t.Errorf("%s: %d records in audit.log, %d in the journal", action, n, len(byAction[action]))
		}
	}
	for _, c := range []string{"canary-journal-1", "canary-journal-2"} {
		if strings.Contains(all, c) {
			t.Errorf("canary %q found in the journal", c)
		}
	}
	a.noCanary("canary-journal-1", "canary-journal-2")
}
