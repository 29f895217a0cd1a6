package e2e

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// systemd integration (docs/design.md §8) against the real agent: sd_notify over a
// real unixgram socket, reload on SIGHUP, socket activation from a forked
// process given LISTEN_FDS, and the credentials socket that serves
// LoadCredential=, connected to the way systemd connects.

// notifySocket is a stand-in for systemd's notification socket.
type notifySocket struct {
	path string
	msgs chan string
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	dir, err := os.MkdirTemp("", "eln")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	n := &notifySocket{path: filepath.Join(dir, "notify"), msgs: make(chan string, 1000)}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			n.msgs <- string(buf[:k])
		}
	}()
	return n
}

// expect skips watchdog pings (unless it waits for one) and returns the
// next message, which must start with want.
func (n *notifySocket) expect(t *testing.T, want string) string {
	t.Helper()
	limit := time.After(20 * time.Second)
	for {
		select {
		case m := <-n.msgs:
			if m == "WATCHDOG=1" && want != m {
				continue
			}
			if !strings.HasPrefix(m, want) {
				t.Fatalf("sd_notify: got %q, want %q", m, want)
			}
			return m
		case <-limit:
			t.Fatalf("sd_notify: no %q", want)
		}
	}
}

func monotonicUsec() uint64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Sec)*1e6 + uint64(ts.Nsec)/1e3
}

func TestSdNotify(t *testing.T) {
	n := listenNotify(t)
	t.Setenv("NOTIFY_SOCKET", n.path)
	t.Setenv("WATCHDOG_USEC", "200000") // a ping every 100 ms
	a := startAgent(t, "PATH = /usr/bin:/bin\nGREETING = one")
	n.expect(t, "READY=1")
	n.expect(t, "WATCHDOG=1")
	a.cli("project", "create", "p")
	a.register(map[string]any{"id": "svc", "user": "u", "project": "p", "match": map[string]any{"uid": a.uid("svc")}, "mount": true})
	a.waitLog("mount written: workload=svc ", 1)

	// A reload applies [defaults] and the limits, and names what needs a
	// restart.
	conf, _ := os.ReadFile(a.config)
	next := strings.Replace(string(conf), "GREETING = one", "GREETING = two", 1)
	next = strings.Replace(next, "[defaults]", "max_value_bytes = 10\nadmin_group = envlet-other\n[defaults]", 1)
	os.WriteFile(a.config, []byte(next), 0o644)
	before := monotonicUsec()
	a.cmd.Process.Signal(syscall.SIGHUP)
	m := n.expect(t, "RELOADING=1\nMONOTONIC_USEC=")
	usec, err := strconv.ParseUint(strings.TrimPrefix(m, "RELOADING=1\nMONOTONIC_USEC="), 10, 64)
	if err != nil || usec < before || usec > monotonicUsec() {
		t.Fatalf("RELOADING: %q; MONOTONIC_USEC must be CLOCK_MONOTONIC at the reload (%d..)", m, before)
	}
	n.expect(t, "READY=1")
	a.waitLog("config reloaded", 1)
	if !strings.Contains(a.log.String(), `keys=["admin_group"]`) {
		t.Errorf("the reload did not name admin_group as needing a restart:\n%s", a.log.String())
	}
	if env, r := a.launchEnv(a.uid("svc"), a.uid("svc")); env["GREETING"] != "two" {
		t.Errorf("after the reload: %v %s", env, r)
	}
	a.waitLog("mount written: workload=svc ", 2) // the mount follows
	if r := a.cliAs(0, "env", "set", "LONG", "12345678901"); r.code == 0 || !strings.Contains(r.stderr, "ENV_VAR_INVALID_VALUE") {
		t.Errorf("max_value_bytes = 10 after the reload: %s", r)
	}

	// A config that does not parse changes nothing, and systemd still
	// hears READY.
	os.WriteFile(a.config, []byte(next+"\nno equals sign here\n"), 0o644)
	a.cmd.Process.Signal(syscall.SIGHUP)
	n.expect(t, "RELOADING=1")
	n.expect(t, "READY=1")
	a.waitLog("reload failed; keeping the running config", 1)
	if env, _ := a.launchEnv(a.uid("svc"), a.uid("svc")); env["GREETING"] != "two" {
		t.Errorf("after a failed reload: %v", env)
	}

	a.stop()
	n.expect(t, "STOPPING=1")
}

// TestSocketActivation: the agent serves on the sockets it inherits
// (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES) and binds none of its own. The
// names, not the order, decide which socket is which.
func TestSocketActivation(t *testing.T) {
	a := startAgent(t, "PATH = /usr/bin:/bin")
	a.cli("project", "create", "p")
	a.register(map[string]any{"id": "svc", "user": "u", "project": "p", "match": map[string]any{"uid": a.uid("activated")}, "runtime": map[string]string{"X": "activated"}})
	a.stop()

	listen := func(name string) (string, *os.File) {
		p := filepath.Join(a.dir, name)
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		l.SetUnlinkOnClose(false)
		os.Chmod(p, 0o666)
		f, err := l.File()
		if err != nil {
			t.Fatal(err)
		}
		l.Close()
		return p, f
	}
	adminPath, adminF := listen("act-admin.sock")
	workPath, workF := listen("act-work.sock")
	credPath, credF := listen("act-cred.sock")
	bound := []string{a.workSock, a.adminSock, filepath.Join(a.dir, "c.sock")}
	a.workSock, a.adminSock = workPath, adminPath

	// LISTEN_PID must be the agent's own pid: the shell sets it to its pid,
	// then execs the agent in its place.
	a.starts++
	a.log = newLogBuf()
	a.cmd = exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, bins.envletd, "-config", a.config)
	a.cmd.Env = append(os.Environ(), "LISTEN_FDS=3", "LISTEN_FDNAMES=admin:workload:credentials")
	a.cmd.ExtraFiles = []*os.File{adminF, workF, credF}
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []*os.File{adminF, workF, credF} {
		f.Close()
	}
	a.done = make(chan struct{})
	go func() { a.cmd.Wait(); close(a.done) }()
	a.waitLog("serving:", 1)
	a.waitLog("using a socket from systemd", 3)

	if env, r := a.launchEnv(a.uid("activated"), a.uid("activated")); env["X"] != "activated" {
		t.Fatalf("launcher on the activated socket: %v %s", env, r)
	}
	if out := a.cli("workload", "list"); !strings.Contains(out, "svc") {
		t.Fatalf("CLI on the activated socket: %s", out)
	}
	if got, _ := readCredential(t, credPath, "svc.service", "X"); got != "" {
		t.Fatalf("credential for an unregistered unit: %q", got)
	}
	a.waitLog("credential refused", 1)
	for _, p := range bound {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("the agent bound %s although systemd passed its sockets", p)
		}
	}
	for _, name := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} {
		if env, _ := a.launchEnv(a.uid("activated"), a.uid("activated")); env[name] != "" {
			t.Errorf("%s leaked to a workload", name)
		}
	}
	a.stop()
	// Sockets systemd owns outlive the agent.
	for _, p := range []string{workPath, adminPath, credPath} {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s after the agent stopped: %v", p, err)
		}
	}
}

// readCredential connects to the credentials socket as systemd does for
// LoadCredential=ID:PATH: bound to the abstract address
// "\0<random hex>/unit/<unit>/<id>", write side shut, read to EOF.
func readCredential(t *testing.T, sock, unit, id string) (string, error) {
	t.Helper()
	local := &net.UnixAddr{Name: fmt.Sprintf("@%x/unit/%s/%s", time.Now().UnixNano(), unit, id), Net: "unix"}
	c, err := net.DialUnix("unix", local, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.CloseWrite()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

const canaryCred = "c4n4ry-cr3d-v4lue"

func TestCredentialsSocket(t *testing.T) {
	a := startAgent(t, "PATH = /usr/bin:/bin")
	sock := filepath.Join(a.dir, "c.sock")
	a.cli("project", "create", "p")
	a.cli("project", "add-member", "p", "cu")
	a.cli("env", "set", "--user", "cu", "DB_PASSWORD", canaryCred)
	a.cli("secret", "create", "--project", "p", "API_KEY_FILE", "secret-"+canaryCred)
	a.cli("secret", "create", "--project", "p", "DB_PASSWORD", "the variable wins")
	a.register(map[string]any{"id": "svc", "user": "cu", "project": "p", "match": map[string]any{"systemd_unit": "train.service"}})
	a.register(map[string]any{"id": "twin-a", "user": "cu", "project": "p", "match": map[string]any{"systemd_unit": "twin.service"}})
	a.register(map[string]any{"id": "twin-b", "user": "cu", "project": "p", "match": map[string]any{"systemd_unit": "twin.service", "uid": a.uid("twin")}})

	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials socket: %v %v, want mode 0600", fi.Mode(), err)
	}
	for _, tt := range []struct {
		name, unit, id, want, refusal string
		n                             int // refusals of this code so far
	}{
		{"Variable", "train.service", "DB_PASSWORD", canaryCred, "", 0},
		{"Secret", "train.service", "API_KEY_FILE", "secret-" + canaryCred, "", 0},
		{"Missing", "train.service", "NOPE", "", "ENV_VAR_NOT_FOUND", 1},
		{"UnknownUnit", "other.service", "DB_PASSWORD", "", "WORKLOAD_UNKNOWN", 1},
		{"AmbiguousUnit", "twin.service", "DB_PASSWORD", "", "WORKLOAD_AMBIGUOUS", 1},
		{"CredentialIDNotAName", "train.service", "tls.key", "", "ENV_VAR_NOT_FOUND", 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readCredential(t, sock, tt.unit, tt.id)
			if err != nil || got != tt.want {
				t.Fatalf("read %s/%s: %v, %d bytes; want %d bytes", tt.unit, tt.id, err, len(got), len(tt.want))
			}
			if tt.refusal != "" {
				a.waitLog("credential refused: code="+tt.refusal, tt.n)
			}
		})
	}
	// Not bound to a credential address: refused.
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(c); len(b) != 0 {
		t.Errorf("an unbound peer got %d bytes", len(b))
	}
	c.Close()
	a.waitLog("the peer is not bound to a systemd credential address", 1)

	// Only root may ask, even where the socket lets others connect.
	os.Chmod(sock, 0o666)
	r := a.runAs(a.uid("twin"), a.uid("twin"), "", nil, "/usr/bin/python3", "-c", `
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(b"\0" + os.urandom(8).hex().encode() + b"/unit/train.service/DB_PASSWORD")
s.connect(sys.argv[1])
s.shutdown(socket.SHUT_WR)
data = b""
while True:
    b = s.recv(4096)
    if not b:
        break
    data += b
print(len(data))
`, sock)
	if r.code != 0 || strings.TrimSpace(r.stdout) != "0" {
		t.Errorf("uid "+uidName(a.uid("twin"))+" asking for a credential: %s", r)
	}
	a.waitLog("only root (the service manager) may read credentials", 1)

	// Served and refused credentials are audited by name, never by value.
	audit, _ := os.ReadFile(a.audit)
	if !strings.Contains(string(audit), `"socket":"credentials"`) || !strings.Contains(string(audit), `"name":"DB_PASSWORD"`) {
		t.Errorf("audit log lacks the credentials:\n%s", audit)
	}
	a.noCanary(canaryCred)
}
