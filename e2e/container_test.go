package e2e

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Real containers: podman with runc and the cgroupfs manager (this host has
// hybrid cgroups), the example image of packaging/container built on a base
// made FROM scratch with Debian's busybox-static (no registry is reachable),
// envlet-exec as its ENTRYPOINT, and the agent's workload socket directory
// bind-mounted read-only. Podman missing or unable to run is a skip, and a
// failure under CI=true.

// podmanGlobal and podmanRunFlags are what docs/operations.md's "Containers" shows:
// runc and cgroupfs, no network, limits the runtime may set as root.
var (
	podmanGlobal   = []string{"--runtime", "runc", "--cgroup-manager", "cgroupfs"}
	podmanRunFlags = []string{"--network=none", "--ulimit", "nofile=1024:20000", "--ulimit", "nproc=4096:4096"}
)

// images are built once per test binary run, named uniquely (other
// engineers run these tests at the same time), and removed by TestMain.
var images struct {
	once          sync.Once
	skip          string // why podman cannot run here
	err           error
	suffix        string
	base, example string
	n             atomic.Int64 // container names
}

func podman(args ...string) *exec.Cmd {
	return exec.Command("podman", append(append([]string(nil), podmanGlobal...), args...)...)
}

// podmanOut runs podman and returns its trimmed stdout, failing t on error.
func podmanOut(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := podman(args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return strings.TrimSpace(out.String())
}

// needImages builds the images on first use, or skips (fails under CI).
func needImages(t *testing.T) {
	t.Helper()
	images.once.Do(buildImages)
	if images.skip != "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and containers cannot run: %s", images.skip)
		}
		t.Skip(images.skip)
	}
	if images.err != nil {
		t.Fatal(images.err)
	}
}

const busyboxPath = "/bin/busybox"

func buildImages() {
	for _, tool := range []string{"podman", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			images.skip = tool + " is not installed (apt-get install podman runc busybox-static)"
			return
		}
	}
	if f, err := elf.Open(busyboxPath); err != nil {
		images.skip = busyboxPath + ": " + err.Error() + " (apt-get install busybox-static)"
		return
	} else {
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				images.skip = busyboxPath + " is dynamically linked: a FROM scratch image needs busybox-static"
			}
		}
		f.Close()
		if images.skip != "" {
			return
		}
	}
	if out, err := podman("info").CombinedOutput(); err != nil {
		images.skip = fmt.Sprintf("podman cannot run here: %v: %s", err, clipOut(out))
		return
	}
	images.suffix = fmt.Sprintf("%d-%08x", os.Getpid(), rand.Uint32())
	base := "localhost/envlet-e2e-base-" + images.suffix
	example := "localhost/envlet-e2e-example-" + images.suffix

	// The base: busybox and the applets the tests use, FROM scratch.
	rootfs, err := busyboxTar()
	if err != nil {
		images.err = err
		return
	}
	imp := podman("import", "-", base)
	imp.Stdin = bytes.NewReader(rootfs)
	if out, err := imp.CombinedOutput(); err != nil {
		images.err = fmt.Errorf("podman import: %v: %s", err, clipOut(out))
		return
	}
	images.base = base
	// The example, from packaging/container/Dockerfile as it is, with the
	// static launcher the suite built: what `make container-context` puts
	// in dist/container.
	ctx, err := os.MkdirTemp("", "envlet-ctx")
	if err != nil {
		images.err = err
		return
	}
	defer os.RemoveAll(ctx)
	df, err := os.ReadFile("../packaging/container/Dockerfile")
	if err == nil {
		err = os.WriteFile(filepath.Join(ctx, "Dockerfile"), df, 0o644)
	}
	if err == nil {
		var exe []byte
		if exe, err = os.ReadFile(bins.exec); err == nil {
			err = os.WriteFile(filepath.Join(ctx, "envlet-exec"), exe, 0o755)
		}
	}
	if err != nil {
		images.err = err
		return
	}
	if out, err := podman("build", "--build-arg", "BASE="+base, "-t", example, ctx).CombinedOutput(); err != nil {
		images.err = fmt.Errorf("podman build: %v: %s", err, clipOut(out))
		return
	}
	images.example = example
}

func clipOut(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// busyboxTar is a root file system: /bin/busybox and a link per applet used.
func busyboxTar() ([]byte, error) {
	bb, err := os.ReadFile(busyboxPath)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777})
	tw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bb))})
	tw.Write(bb)
	for _, applet := range []string{"sh", "cat", "env", "sleep", "echo", "ls", "id"} {
		tw.WriteHeader(&tar.Header{Name: "bin/" + applet, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777})
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// removeContainerImages is called by TestMain once every test has run.
func removeContainerImages() {
	for _, img := range []string{images.example, images.base} {
		if img != "" {
			podman("rmi", "-f", img).Run()
		}
	}
}

// freeIDs returns n numbers that are neither a uid nor a gid on this
// machine, for container users the test owns alone.
func freeIDs(t *testing.T, n int) []uint32 {
	t.Helper()
	var ids []uint32
	for id := 40000 + rand.IntN(20000); len(ids) < n && id < 65000; id++ {
		s := strconv.Itoa(id)
		if _, err := user.LookupId(s); err == nil {
			continue
		}
		if _, err := user.LookupGroupId(s); err == nil {
			continue
		}
		ids = append(ids, uint32(id))
	}
	if len(ids) < n {
		t.Fatal("no free uids")
	}
	return ids
}

// createContainer is `podman create --rm` of the example image as uid,
// with the agent's workload socket directory mounted read-only where the
// image looks for it; extra goes before the image, cmd after. It returns
// the container's name and id; the container goes with the test.
func createContainer(t *testing.T, a *agentProc, uid uint32, extra []string, cmd ...string) (name, id string) {
	t.Helper()
	name = fmt.Sprintf("envlet-e2e-%s-%d", images.suffix, images.n.Add(1))
	args := append([]string{"create", "--rm", "--name", name}, podmanRunFlags...)
	args = append(args, "--user", fmt.Sprintf("%d:%d", uid, uid),
		"-v", filepath.Dir(a.workSock)+":/run/envlet/workload:ro")
	args = append(append(append(args, extra...), images.example), cmd...)
	id = podmanOut(t, args...)
	t.Cleanup(func() { podman("rm", "-f", "-t", "0", name).Run() })
	return name, id
}

// startContainer starts a created container attached: its stdout lines
// and stderr come to the test as a launcher's would (watch_test.go).
func startContainer(t *testing.T, a *agentProc, name string) *watched {
	t.Helper()
	return startAttached(t, a, name, podman("start", "--attach", name))
}

// startAttached runs cmd, which attaches to container name.
func startAttached(t *testing.T, a *agentProc, name string, cmd *exec.Cmd) *watched {
	t.Helper()
	p := startWatched(t, cmd)
	t.Cleanup(func() {
		podman("rm", "-f", "-t", "0", name).Run()
		<-p.done
		a.record("container "+name+" stderr", p.stderr.String())
	})
	return p
}

// containerFixture: project fraud with group data (DATA_BUCKET, and a
// canary the agent must never print), alice a member; conf is extra agent
// config.
func containerFixture(t *testing.T, conf ...string) *agentProc {
	needImages(t)
	a := startAgentConf(t, strings.Join(conf, "\n"), "")
	a.cli("project", "create", "fraud")
	a.cli("project", "add-member", "fraud", "alice")
	a.cli("group", "create", "data")
	a.cli("group", "set", "data", "DATA_BUCKET", "s3://one")
	a.cli("group", "set", "data", "API_KEY_C", canaryContainer)
	a.cli("project", "groups", "fraud", "data")
	return a
}

const canaryContainer = "c4n4ry-c0nt41ner-77a1"

// registerContainer registers a container by its id (and uid, when given).
func registerContainer(a *agentProc, wid, cid string, uid *uint32, extra map[string]any) {
	match := map[string]any{"container_id": cid}
	if uid != nil {
		match["uid"] = *uid
	}
	reg := map[string]any{"id": wid, "user": "alice", "project": "fraud", "match": match}
	for k, v := range extra {
		reg[k] = v
	}
	a.register(reg)
}

// TestContainerWatch: the example image, run as a uid of its own and
// recognised by its container id alone, starts its program with the merged
// environment; a group change restarts the program inside the running
// container; `podman stop` ends it with the program's own status, SIGTERM
// passed on by envlet-exec as PID 1, which reaped an orphan on the way.
func TestContainerWatch(t *testing.T) {
	a := containerFixture(t)
	uid := freeIDs(t, 1)[0]
	// The program orphans a child (the inner sh exits before its sleep):
	// the kernel hands it to PID 1, the launcher, which must reap it.
	name, id := createContainer(t, a, uid, nil, "sh", "-c",
		`sh -c "sleep 0 &"; echo "started with DATA_BUCKET=$DATA_BUCKET"; exec sleep infinity`)
	registerContainer(a, "job", id, nil, nil)
	p := startContainer(t, a, name)
	if got := p.expect(t, "started with "); got != "DATA_BUCKET=s3://one" {
		t.Fatalf("first start: %q", got)
	}
	a.cli("group", "set", "data", "DATA_BUCKET", "s3://two")
	if got := p.expect(t, "started with "); got != "DATA_BUCKET=s3://two" {
		t.Fatalf("after the change: %q", got)
	}
	noZombies(t, name)

	out := podmanOut(t, "stop", "-t", "30", name)
	if out != name {
		t.Logf("podman stop: %q", out)
	}
	if code := p.wait(t); code != 143 {
		t.Errorf("container exit %d, want 143 (the program's sleep ended by the SIGTERM envlet-exec passed on); stderr:\n%s", code, p.stderr.String())
	}
	a.noCanary(canaryContainer)
}

// noZombies waits until the container's PID 1 (envlet-exec) has a single
// child, the program, and no zombie: an orphan it failed to reap would stay
// a zombie child of it until the hang guard fails the test.
func noZombies(t *testing.T, name string) {
	t.Helper()
	pid, err := strconv.Atoi(podmanOut(t, "inspect", "--format", "{{.State.Pid}}", name))
	if err != nil || pid <= 0 {
		t.Fatalf("container PID 1: %v", err)
	}
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if strings.TrimSpace(string(comm)) != "envlet-exec" {
		t.Fatalf("the container's PID 1 is %q, want envlet-exec", comm)
	}
	limit := time.Now().Add(hangGuard)
	for {
		kids := childrenOf(pid)
		if len(kids) == 1 && kids[0] != "Z" {
			return
		}
		if time.Now().After(limit) {
			t.Fatalf("PID 1's children (states) %v: want one, the program, and no zombie", kids)
		}
		time.Sleep(20 * time.Millisecond) // a poll: the kernel signals no event for this
	}
}

// childrenOf lists the states of pid's children, from /proc/*/stat.
func childrenOf(pid int) []string {
	ents, _ := os.ReadDir("/proc")
	var states []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) >= 2 && f[1] == strconv.Itoa(pid) {
			states = append(states, f[0])
		}
	}
	return states
}

// TestContainerAgentRestart: the agent restarts while a --watch container
// runs. The container mounted the socket's directory, so the new socket
// the restarted agent binds is there: the launcher reconnects and the
// program keeps getting changes. (A mounted socket file would keep the
// dead inode: nothing could ever connect through it again.)
func TestContainerAgentRestart(t *testing.T) {
	a := containerFixture(t)
	uid := freeIDs(t, 1)[0]
	name, id := createContainer(t, a, uid, nil)
	registerContainer(a, "job", id, &uid, nil)
	p := startContainer(t, a, name)
	if got := p.expect(t, "started with "); got != "DATA_BUCKET=s3://one" {
		t.Fatalf("first start: %q", got)
	}
	a.restart() // a new socket in the mounted directory
	p.stderr.waitFor(t, "envlet-exec: WATCH_LOST: ", 1)
	p.stderr.waitFor(t, "envlet-exec: WATCH_RESUMED: ", 1)
	a.cli("group", "set", "data", "DATA_BUCKET", "s3://after-restart")
	if got := p.expect(t, "started with "); got != "DATA_BUCKET=s3://after-restart" {
		t.Fatalf("after the agent restarted: %q", got)
	}
}

// TestContainerMountDir: a legacy runtime's container gets the workload's
// mount directory, read-only, and reads env and docker.env with its own
// tools; it never talks to the agent.
func TestContainerMountDir(t *testing.T) {
	a := containerFixture(t)
	uid := freeIDs(t, 1)[0]
	a.register(map[string]any{"id": "legacy", "user": "alice", "project": "fraud", "match": map[string]any{"uid": uid}, "mount": true})
	a.waitLog("mount written: workload=legacy ", 1)
	name, _ := createContainer(t, a, uid,
		[]string{"-v", filepath.Join(a.dir, "mounts", "legacy") + ":/run/envlet/env:ro", "--entrypoint", "/bin/sh"},
		"-c", `set -a; . /run/envlet/env/env; echo "sourced DATA_BUCKET=$DATA_BUCKET"; cat /run/envlet/env/docker.env`)
	p := startContainer(t, a, name)
	if got := p.expect(t, "sourced "); got != "DATA_BUCKET=s3://one" {
		t.Fatalf("env sourced in the container: %q", got)
	}
	var dockerEnv []string
	for line := range p.lines {
		dockerEnv = append(dockerEnv, line)
	}
	if code := p.wait(t); code != 0 {
		t.Fatalf("container exit %d; stderr:\n%s", code, p.stderr.String())
	}
	if !contains(dockerEnv, "DATA_BUCKET=s3://one") || !contains(dockerEnv, "API_KEY_C="+canaryContainer) {
		t.Errorf("docker.env read in the container:\n%s", strings.Join(dockerEnv, "\n"))
	}
}

// TestContainerRefused: a container nobody registered, and one whose id is
// registered for another uid than it runs as, get nothing: envlet-exec
// exits 125 before the program runs, the refusal says WORKLOAD_UNKNOWN and
// names the container the agent saw.
func TestContainerRefused(t *testing.T) {
	a := containerFixture(t)
	ids := freeIDs(t, 2)
	uid, other := ids[0], ids[1]
	unregistered, uid1 := createContainer(t, a, uid, nil)
	otherUser, uid2 := createContainer(t, a, uid, nil)
	registerContainer(a, "someone-else", uid2, &other, nil)
	for _, c := range []struct{ name, id string }{{unregistered, uid1}, {otherUser, uid2}} {
		p := startContainer(t, a, c.name)
		code := p.wait(t)
		var out []string
		for line := range p.lines {
			out = append(out, line)
		}
		if code != 125 || len(out) != 0 {
			t.Errorf("%s: exit %d, stdout %q; want 125 and nothing from the program", c.name, code, out)
		}
		if se := p.stderr.String(); !strings.Contains(se, "WORKLOAD_UNKNOWN") || !strings.Contains(se, "container "+c.id) {
			t.Errorf("%s: refusal %q: want WORKLOAD_UNKNOWN naming container %s", c.name, se, c.id)
		}
	}
	a.noCanary(canaryContainer)
}
