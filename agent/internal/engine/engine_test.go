package engine

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func TestFromLabels(t *testing.T) {
	id := strings.Repeat("ab", 32)
	for _, tt := range []struct {
		name   string
		labels map[string]string
		ok     bool
		err    string
		want   Container
	}{
		{"None", nil, false, "", Container{}},
		{"Others", map[string]string{"app": "x"}, false, "", Container{}},
		{"Both", map[string]string{LabelUser: "alice", LabelProject: "fraud"}, true, "", Container{ID: id, User: "alice", Project: "fraud"}},
		{"Extras", map[string]string{LabelUser: "alice", LabelProject: "fraud", LabelMount: "true", LabelRuntimePrefix + "MODE": "c"}, true, "",
			Container{ID: id, User: "alice", Project: "fraud", Mount: true, Runtime: map[string]string{"MODE": "c"}}},
		{"UserOnly", map[string]string{LabelUser: "alice"}, false, "needs both", Container{}},
		{"MountOnly", map[string]string{LabelMount: "true"}, false, "but not", Container{}},
		{"BadMount", map[string]string{LabelUser: "a", LabelProject: "p", LabelMount: "yes"}, false, "true or false", Container{}},
		{"Misspelt", map[string]string{LabelUser: "a", LabelProject: "p", "io.envlet.projet": "p"}, false, "unknown envlet labels io.envlet.projet", Container{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, ok, err := fromLabels(id, tt.labels)
			if ok != tt.ok || (err == nil) != (tt.err == "") || err != nil && !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("ok %v err %v; want ok %v err %q", ok, err, tt.ok, tt.err)
			}
			if ok && fmt.Sprint(c) != fmt.Sprint(tt.want) {
				t.Errorf("got %+v, want %+v", c, tt.want)
			}
		})
	}
}

func TestNewRefusesTCP(t *testing.T) {
	for _, e := range []string{"tcp://127.0.0.1:2375", "unix://host/x.sock", "/run/podman/podman.sock", "unix://"} {
		if _, err := New(e, nil, hclog.NewNullLogger()); err == nil {
			t.Errorf("New(%q) accepted", e)
		}
	}
}

// recorder is the Registrar the tests watch.
type recorder struct{ ch chan string }

func (r *recorder) PutContainer(c Container) error {
	r.ch <- fmt.Sprintf("put %s %s/%s %v", c.ID, c.User, c.Project, c.Runtime)
	return nil
}
func (r *recorder) RemoveContainer(id string) { r.ch <- "remove " + id }
func (r *recorder) ReconcileContainers(cs []Container) {
	var ids []string
	for _, c := range cs {
		ids = append(ids, c.ID)
	}
	r.ch <- "reconcile " + strings.Join(ids, ",")
}

func (r *recorder) next(t *testing.T) string {
	t.Helper()
	select {
	case s := <-r.ch:
		return s
	case <-time.After(60 * time.Second): // a hang guard, not a timing assertion
		t.Fatal("no call from the follower")
	}
	return ""
}

// TestFollowPodman follows a real `podman system service` on a socket of
// its own: Lookup registers a labelled container before any event, Run
// reconciles, then follows creates and removals.
func TestFollowPodman(t *testing.T) {
	if _, err := exec.LookPath("podman"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true and podman is not installed")
		}
		t.Skip("podman is not installed (apt-get install podman runc)")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "p.sock")
	svc := exec.Command("podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "system", "service", "--time=0", "unix://"+sock)
	if err := svc.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { svc.Process.Kill(); svc.Wait() }()
	for i := 0; ; i++ { // a poll for the socket: the service announces nothing
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if i > 3000 {
			t.Fatal("podman system service does not answer")
		}
		time.Sleep(20 * time.Millisecond)
	}
	remote := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("podman", append([]string{"--remote", "--url", "unix://" + sock}, args...)...).Output()
		if err != nil {
			t.Fatalf("podman %v: %v", args, err)
		}
		return strings.TrimSpace(string(out))
	}
	// An image with nothing in it: these containers are created, never run.
	image := fmt.Sprintf("localhost/envlet-engine-test-%d-%08x", os.Getpid(), rand.Uint32())
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	tw.WriteHeader(&tar.Header{Name: "empty/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.Close()
	imp := exec.Command("podman", "import", "-", image)
	imp.Stdin = &tb
	if out, err := imp.CombinedOutput(); err != nil {
		t.Fatalf("podman import: %v %s", err, out)
	}
	defer exec.Command("podman", "rmi", "-f", image).Run()
	create := func(labels ...string) string {
		args := []string{"create"}
		for _, l := range labels {
			args = append(args, "--label", l)
		}
		id := remote(append(args, image, "/x")...)
		t.Cleanup(func() { exec.Command("podman", "rm", "-f", id).Run() })
		return id
	}

	rec := &recorder{ch: make(chan string, 16)}
	f, err := New("unix://"+sock, rec, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Lookup, no event stream: the labelled container is put at once.
	labelled := create("io.envlet.user=alice", "io.envlet.project=fraud", "io.envlet.runtime.MODE=c")
	f.Lookup(ctx, labelled)
	if got, want := rec.next(t), "put "+labelled+" alice/fraud map[MODE:c]"; got != want {
		t.Fatalf("lookup: %q, want %q", got, want)
	}
	plain := create()
	f.Lookup(ctx, plain)
	f.Lookup(ctx, labelled) // seen: the engine is not asked again
	select {
	case s := <-rec.ch:
		t.Fatalf("an unlabelled or known container gave %q", s)
	default:
	}

	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	if got := rec.next(t); got != "reconcile "+labelled {
		t.Fatalf("start: %q", got)
	}
	second := create("io.envlet.user=bob", "io.envlet.project=p")
	if got := rec.next(t); got != "put "+second+" bob/p map[]" {
		t.Fatalf("create event: %q", got)
	}
	create() // unlabelled: nothing
	remote("rm", second)
	if got := rec.next(t); got != "remove "+second {
		t.Fatalf("remove event: %q", got)
	}
	cancel()
	<-done

	// An engine socket another user owns is refused.
	var other int
	for id := 40000 + rand.IntN(20000); ; id++ {
		if _, err := user.LookupId(strconv.Itoa(id)); err != nil {
			other = id
			break
		}
	}
	if err := os.Chown(sock, other, other); err != nil {
		t.Fatal(err)
	}
	if err := f.CheckSocket(); err == nil || !strings.Contains(err.Error(), "not root") {
		t.Fatalf("socket owned by uid %d: %v", other, err)
	}
}
