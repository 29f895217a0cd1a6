// Package container_test checks the example image without docker, which
// does not run here: the build context `make container-context` prepares
// holds everything the Dockerfile copies, and the image's ENTRYPOINT and
// CMD, run as the image would run them against an agent on the mounted
// socket path, start the program with the agent's environment.
package container_test

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envlet/envlet/agent/wire"
)

// dockerfile is the example's instructions, continuation lines joined.
type dockerfile struct {
	copies     [][2]string // COPY source, destination
	entrypoint []string
	cmd        []string
	env        map[string]string
	user       string
}

func parseDockerfile(t *testing.T, path string) dockerfile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d := dockerfile{env: map[string]string{}}
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		instr, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(instr) {
		case "COPY", "ADD":
			f := strings.Fields(rest)
			if len(f) != 2 || strings.HasPrefix(f[0], "--") {
				t.Fatalf("COPY the test cannot read: %q", line)
			}
			d.copies = append(d.copies, [2]string{f[0], f[1]})
		case "ENTRYPOINT", "CMD":
			var argv []string
			if err := json.Unmarshal([]byte(rest), &argv); err != nil {
				t.Fatalf("%s is not in exec form (a JSON array): %q", instr, rest)
			}
			if strings.ToUpper(instr) == "CMD" {
				d.cmd = argv
			} else {
				d.entrypoint = argv
			}
		case "ENV":
			k, v, _ := strings.Cut(rest, "=")
			d.env[k] = v
		case "USER":
			d.user = rest
		}
	}
	return d
}

func TestBuildContext(t *testing.T) {
	if testing.Short() {
		t.Skip("builds envlet-exec")
	}
	// Reachable by the image's USER, who runs the launcher below.
	dist, err := os.MkdirTemp("", "envlet-ctx")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dist)
	os.Chmod(dist, 0o755)
	cmd := exec.Command("make", "container-context", "DIST="+dist)
	cmd.Dir = "../.."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make container-context: %v\n%s", err, out)
	}
	ctx := filepath.Join(dist, "container")
	d := parseDockerfile(t, filepath.Join(ctx, "Dockerfile"))
	if len(d.copies) == 0 || len(d.entrypoint) == 0 {
		t.Fatal("the Dockerfile copies nothing or has no ENTRYPOINT")
	}
	// Every COPY source is in the context; the ENTRYPOINT is one of them.
	dest := map[string]string{} // path in the image -> path in the context
	for _, c := range d.copies {
		if _, err := os.Stat(filepath.Join(ctx, c[0])); err != nil {
			t.Errorf("COPY %s: not in the build context: %v", c[0], err)
		}
		dest[c[1]] = filepath.Join(ctx, c[0])
	}
	launcher, ok := dest[d.entrypoint[0]]
	if !ok {
		t.Fatalf("ENTRYPOINT %s is not a file the Dockerfile copies", d.entrypoint[0])
	}
	// The launcher must run on any base image: static.
	var f *elf.File
	f, err = elf.Open(launcher)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the image's envlet-exec is dynamically linked")
		}
	}
	f.Close()
	if d.env["ENVLET_SOCKET"] != "/run/envlet/workload/workload.sock" {
		t.Errorf("ENV ENVLET_SOCKET=%q, want the path the socket is mounted at", d.env["ENVLET_SOCKET"])
	}

	// `docker run`, less docker: ENTRYPOINT + CMD with the image's ENV, as
	// its USER, against an agent on a socket at a path of our own.
	sock, stop := agent(t, wire.Entry{Name: "DATA_BUCKET", Value: []byte("s3://fraud")})
	defer stop()
	argv := append(append([]string{launcher}, d.entrypoint[1:]...), d.cmd...)
	run := exec.Command(argv[0], argv[1:]...)
	run.Env = []string{"PATH=/usr/bin:/bin", "ENVLET_SOCKET=" + sock}
	var uid, gid uint32
	if _, err := fmtSscan(d.user, &uid, &gid); err != nil {
		t.Fatalf("USER %q: want uid:gid", d.user)
	}
	if os.Getuid() == 0 {
		run.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	}
	stdout, _ := run.StdoutPipe()
	var stderr bytes.Buffer
	run.Stderr = &stderr
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- s
	}()
	select {
	case got := <-line:
		if got != "started with DATA_BUCKET=s3://fraud\n" {
			t.Errorf("the program printed %q", got)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the program printed nothing; stderr %q", stderr.String())
	}
	// docker stop: SIGTERM to PID 1, the launcher, which passes it on.
	run.Process.Signal(syscall.SIGTERM)
	err = run.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 143 {
		t.Errorf("after SIGTERM: %v, want exit 143 (sleep ended by SIGTERM); stderr %q", err, stderr.String())
	}
}

// fmtSscan reads "uid:gid".
func fmtSscan(s string, uid, gid *uint32) (int, error) {
	var n [2]uint64
	parts := strings.Split(s, ":")
	if len(parts) != 2 {
		return 0, os.ErrInvalid
	}
	for i, p := range parts {
		for _, c := range p {
			if c < '0' || c > '9' {
				return 0, os.ErrInvalid
			}
			n[i] = n[i]*10 + uint64(c-'0')
		}
	}
	*uid, *gid = uint32(n[0]), uint32(n[1])
	return 2, nil
}

// agent answers every Watch or GetEnv on a new socket with entries and
// keeps Watch connections open, as the real agent does.
func agent(t *testing.T, entries ...wire.Entry) (string, func()) {
	t.Helper()
	dir, err := os.MkdirTemp("", "el")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	sock := filepath.Join(dir, "workload.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(sock, 0o666)
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			if _, _, err := wire.ReadFrame(c, nil); err == nil {
				c.Write(wire.AppendEnv(nil, 1, entries))
			}
		}
	}()
	return sock, func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
		os.RemoveAll(dir)
	}
}

// The registration and the run snippets mount the socket's directory where
// the Dockerfile expects it, never the socket file (a restarted agent
// replaces its inode).
func TestExamples(t *testing.T) {
	var reg struct {
		ID    string         `json:"id"`
		Match map[string]any `json:"match"`
	}
	b, err := os.ReadFile("registration-uid.json")
	if err != nil || json.Unmarshal(b, &reg) != nil || reg.ID == "" || reg.Match["uid"] != float64(1001) {
		t.Errorf("registration-uid.json: %v %+v; want a registration matching uid 1001 (the image's USER)", err, reg)
	}
	for _, f := range []string{"compose.yaml", "run.sh", "../kubernetes/example-pod.yaml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "/run/envlet/workload.sock") || strings.Count(string(b), "/run/envlet/workload") < 2 {
			t.Errorf("%s does not mount the directory /run/envlet/workload at /run/envlet/workload (and only it)", f)
		}
	}
	if out, err := exec.Command("sh", "-n", "run.sh").CombinedOutput(); err != nil {
		t.Errorf("sh -n run.sh: %v\n%s", err, out)
	}
}
