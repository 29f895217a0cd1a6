package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Containers registered by the engine (config container_engine): the agent
// follows a real `podman system service` on a socket of the test's own,
// through the Docker Engine API it serves.

// podmanService is a running `podman system service` on sock.
type podmanService struct {
	t    *testing.T
	sock string
	cmd  *exec.Cmd
	done chan struct{}
}

func startPodmanService(t *testing.T) *podmanService {
	t.Helper()
	dir, err := os.MkdirTemp("", "pm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &podmanService{t: t, sock: filepath.Join(dir, "podman.sock")}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *podmanService) start() {
	s.t.Helper()
	s.cmd = podman("system", "service", "--time=0", "unix://"+s.sock)
	s.cmd.Stderr = newLogBuf()
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.done = make(chan struct{})
	go func() { s.cmd.Wait(); close(s.done) }()
	// The service says nothing when it listens: wait for its socket to
	// answer (a poll; hangGuard bounds it).
	limit := time.Now().Add(hangGuard)
	for {
		if c, err := net.Dial("unix", s.sock); err == nil {
			c.Close()
			return
		}
		select {
		case <-s.done:
			s.t.Fatalf("podman system service exited: %s", s.cmd.Stderr.(*logBuf).String())
		default:
		}
		if time.Now().After(limit) {
			s.t.Fatal("podman system service does not answer")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *podmanService) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	<-s.done
	os.Remove(s.sock)
}

// remote runs podman as a client of the service.
func (s *podmanService) remote(args ...string) *exec.Cmd {
	return exec.Command("podman", append([]string{"--remote", "--url", "unix://" + s.sock}, args...)...)
}

// remoteCreate creates a container of the example image through the
// service, as uid, with the socket directory mounted and labels.
func (s *podmanService) remoteCreate(t *testing.T, a *agentProc, uid uint32, labels ...string) (name, id string) {
	t.Helper()
	name = fmt.Sprintf("envlet-e2e-%s-%d", images.suffix, images.n.Add(1))
	args := append([]string{"create", "--rm", "--name", name}, podmanRunFlags...)
	args = append(args, "--user", fmt.Sprintf("%d:%d", uid, uid), "-v", filepath.Dir(a.workSock)+":/run/envlet/workload:ro")
	for _, l := range labels {
		args = append(args, "--label", l)
	}
	out, err := s.remote(append(args, images.example)...).Output()
	if err != nil {
		t.Fatalf("podman --remote create: %v", err)
	}
	t.Cleanup(func() { podman("rm", "-f", "-t", "0", name).Run() })
	return name, strings.TrimSpace(string(out))
}

var ourLabels = []string{"io.envlet.user=alice", "io.envlet.project=fraud", "io.envlet.runtime.APP_MODE=container"}

// TestEngineRegistration: labelled containers are registered by the
// engine's events (and before their entrypoint asks), removed with them,
// and reconciled at the agent's start and after the engine restarts; an
// unlabelled container gets nothing.
func TestEngineRegistration(t *testing.T) {
	needImages(t)
	svc := startPodmanService(t)
	ids := freeIDs(t, 1)
	uid := ids[0]
	// Created while no agent runs: found when the agent reconciles at start.
	early := createLabelled(t, svc, ourLabels...)
	a := containerFixture(t, "container_engine = unix://"+svc.sock)
	a.waitLog("container registered: workload=container-"+early+" user=alice project=fraud", 1)

	// podman run: created and started at once; the program starts with
	// the environment of the labels' user and project, and the runtime
	// variable the labels give.
	run := func(labels ...string) *watched {
		name, _ := svc.remoteCreate(t, a, uid, labels...)
		return startRemote(t, a, svc, name)
	}
	p := run(ourLabels...)
	if got := p.expect(t, "started with "); got != "DATA_BUCKET=s3://one" {
		t.Fatalf("labelled container: %q", got)
	}

	// Unlabelled: nothing registered, the launcher refused.
	q := run()
	if code := q.wait(t); code != 125 || !strings.Contains(q.stderr.String(), "WORKLOAD_UNKNOWN") {
		t.Errorf("unlabelled container: exit %d, stderr %q; want 125 and WORKLOAD_UNKNOWN", code, q.stderr.String())
	}
	// Half-labelled: refused too, and the agent says why.
	half := createLabelled(t, svc, "io.envlet.user=alice")
	a.waitLog("container "+half, 1)

	// Removed: its registration goes.
	if out, err := svc.remote("rm", "-f", early).CombinedOutput(); err != nil {
		t.Fatalf("podman rm: %v %s", err, out)
	}
	a.waitLog("container deregistered: workload=container-"+early, 1)
	if list := a.cli("workload", "list"); strings.Contains(list, early) {
		t.Errorf("workload list still holds the removed container:\n%s", list)
	}

	// The engine restarts; a container created meanwhile (by the local
	// podman, the service being down) is found by the reconciliation.
	svc.stop()
	a.waitLog("container engine unavailable", 1)
	mid := podmanOut(t, "create", "--label", ourLabels[0], "--label", ourLabels[1], images.example)
	t.Cleanup(func() { podman("rm", "-f", "-t", "0", mid).Run() })
	svc.start()
	a.waitLog("container registered: workload=container-"+mid+" ", 1)
	a.noCanary(canaryContainer)
}

// createLabelled creates (does not start) a container through the service.
func createLabelled(t *testing.T, svc *podmanService, labels ...string) string {
	t.Helper()
	args := []string{"create"}
	for _, l := range labels {
		args = append(args, "--label", l)
	}
	out, err := svc.remote(append(args, images.example)...).Output()
	if err != nil {
		t.Fatalf("podman --remote create: %v", err)
	}
	id := strings.TrimSpace(string(out))
	t.Cleanup(func() { podman("rm", "-f", "-t", "0", id).Run() })
	return id
}

// startRemote starts a created container through the service, attached.
func startRemote(t *testing.T, a *agentProc, svc *podmanService, name string) *watched {
	t.Helper()
	return startAttached(t, a, name, svc.remote("start", "--attach", name))
}

// TestEngineSocketNotRoot: an engine socket another user owns is refused:
// the agent does not start, and says why.
func TestEngineSocketNotRoot(t *testing.T) {
	dir, err := os.MkdirTemp("", "eng")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "engine.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	owner := freeIDs(t, 1)[0]
	if err := os.Chown(sock, int(owner), int(owner)); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf("state_dir = %[1]s/state\nkey_file = %[1]s/keyring\nworkload_socket = %[1]s/w/w.sock\nadmin_socket = %[1]s/a.sock\n"+
		"credentials_socket = %[1]s/c.sock\nworkloads_dir = %[1]s/wd\nmount_dir = %[1]s/m\naudit_log = %[1]s/audit.log\ntoken_dir = %[1]s/t\n"+
		"container_engine = unix://%[2]s\n", dir, sock)
	os.WriteFile(filepath.Join(dir, "envletd.conf"), []byte(conf), 0o644)
	out, err := exec.Command(bins.envletd, "-config", filepath.Join(dir, "envletd.conf")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), fmt.Sprintf("owned by uid %d, not root", owner)) {
		t.Fatalf("agent with an engine socket owned by uid %d: %v\n%s", owner, err, out)
	}
}
