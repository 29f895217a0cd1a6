package agent

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/envlet/envlet/cache"
)

const (
	dockerID = "7eb263389e5eea068ad3d0c208ea4dd02ba86fa0b2ebd44f63adc391351fba6d"
	k8sID    = "b08be0f4a5536647b2ec2c5c8bd03d928ca897b483528848e716ce80ed37ec69"
	crioID   = "010e9324ada51cccb6d677cfbb55ede98876d294fd084e8498b6c1fc69056b1f"
	podmanID = "3f0a1c9e8b7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3"
)

// TestCgroupLayouts reads recorded /proc/PID/cgroup files of each runtime
// and cgroup mode (testdata/cgroup) and checks what identity derives.
func TestCgroupLayouts(t *testing.T) {
	for _, tt := range []struct {
		file      string
		path      string
		unit      string
		container string
		delegated int64
		slices    string
		pod       string // the Kubernetes pod UID
		err       string
	}{
		{file: "systemd-v2", path: "/system.slice/train.service", unit: "train.service", slices: "system.slice"},
		{file: "systemd-hybrid", path: "/system.slice/train.service", unit: "train.service", slices: "system.slice"},
		{file: "systemd-v1", path: "/system.slice/train.service", unit: "train.service"},
		{file: "systemd-delegated-sub", path: "/system.slice/train.service/payload/worker-3", unit: "train.service"},
		{file: "systemd-nested-slice", path: "/ml.slice/ml-gpu.slice/train@7.service", unit: "train@7.service", slices: "ml.slice,ml-gpu.slice"},
		// docker with the cgroupfs driver on a hybrid host: the v2 line is
		// the shim's unit, the name=systemd line the container.
		{file: "docker-cgroupfs-hybrid", path: "/docker/" + dockerID, container: dockerID},
		{file: "docker-cgroupfs-v1", path: "/docker/" + dockerID, container: dockerID},
		{file: "docker-cgroupfs-v2", path: "/docker/" + dockerID, container: dockerID},
		{file: "docker-systemd-v2", path: "/system.slice/docker-" + dockerID + ".scope", unit: "docker-" + dockerID + ".scope", container: dockerID},
		{file: "docker-systemd-hybrid", path: "/system.slice/docker-" + dockerID + ".scope", unit: "docker-" + dockerID + ".scope", container: dockerID},
		{file: "containerd-k8s-systemd-v2", unit: "cri-containerd-" + k8sID + ".scope", container: k8sID,
			slices: "kubepods.slice,kubepods-burstable.slice,kubepods-burstable-pod0a1b2c3d_4e5f_6789_abcd_ef0123456789.slice",
			pod:    "0a1b2c3d-4e5f-6789-abcd-ef0123456789"},
		{file: "containerd-k8s-cgroupfs-hybrid", path: "/kubepods/burstable/poda0178de9-9963-4c21-a277-14564e7abd2b/" + k8sID, container: k8sID,
			pod: "a0178de9-9963-4c21-a277-14564e7abd2b"},
		{file: "containerd-k8s-guaranteed-cgroupfs-v2", container: k8sID, pod: "b34634ea-cd65-4099-bee5-ad4de9264ffb"},
		{file: "containerd-k8s-static-pod-cgroupfs-v2", container: k8sID, pod: "6c5e1b9d3f2a4e8b9c0d1e2f3a4b5c6d"},
		{file: "crio-systemd-v2", unit: "crio-" + crioID + ".scope", container: crioID, pod: "b34634ea-cd65-4099-bee5-ad4de9264ffb"},
		{file: "crio-conmon-v2", unit: "crio-conmon-" + crioID + ".scope"},
		{file: "crio-cgroupfs-v1", container: crioID, pod: "b34634ea-cd65-4099-bee5-ad4de9264ffb"},
		{file: "podman-systemd-v2", path: "/machine.slice/libpod-" + podmanID + ".scope/container", unit: "libpod-" + podmanID + ".scope", container: podmanID},
		{file: "podman-conmon-v2", unit: "libpod-conmon-" + podmanID + ".scope"},
		{file: "podman-cgroupfs-v1", path: "/libpod_parent/libpod-" + podmanID, container: podmanID},
		// Rootless podman: the user names these cgroups.
		{file: "podman-rootless-v2", unit: "user@1000.service", container: podmanID, delegated: 1000},
		{file: "user-session-v2", unit: "session-3.scope"},
		// A user's own train.service is not the system's train.service.
		{file: "user-unit-spoof-v2", path: "/user.slice/user-1000.slice/user@1000.service/app.slice/train.service", unit: "user@1000.service"},
		{file: "user-docker-spoof-v2", unit: "user@1000.service", container: dockerID, delegated: 1000},
		// Nor is a kubepods slice under a user's manager a pod.
		{file: "user-kubepods-spoof-v2", unit: "user@1000.service", container: k8sID, delegated: 1000},
		{file: "v2-with-named-v1-root", path: "/system.slice/train.service", unit: "train.service"},
		{file: "root-hybrid", path: "/"},
		{file: "init-v2", path: "/init.scope", unit: "init.scope"},
		{file: "outside-namespace-v2", err: "outside the agent's cgroup namespace"},
		{file: "bad-two-v2", err: "two v2 lines"},
		{file: "bad-two-systemd", err: "two name=systemd lines"},
		{file: "bad-garbage", err: "malformed"},
		{file: "bad-v2-with-controller", err: "malformed"},
		{file: "bad-no-systemd-line", err: "no name=systemd or cgroup v2 line"},
		{file: "bad-relative", err: "malformed"},
		{file: "bad-nul", err: "NUL"},
	} {
		t.Run(tt.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", "cgroup", tt.file+".txt"))
			if err != nil {
				t.Fatal(err)
			}
			cg, err := cgroupOf(b)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.path != "" && cg.path != tt.path {
				t.Errorf("path = %q, want %q", cg.path, tt.path)
			}
			if cg.unit != tt.unit {
				t.Errorf("unit = %q, want %q", cg.unit, tt.unit)
			}
			if cg.containerID != tt.container {
				t.Errorf("container = %q, want %q", cg.containerID, tt.container)
			}
			if cg.podUID != tt.pod {
				t.Errorf("pod = %q, want %q", cg.podUID, tt.pod)
			}
			want := int64(-1)
			if tt.delegated != 0 {
				want = tt.delegated
			}
			if cg.delegatedUID != want {
				t.Errorf("delegated uid = %d, want %d", cg.delegatedUID, want)
			}
			if tt.slices != "" && strings.Join(cg.slices, ",") != tt.slices {
				t.Errorf("slices = %q, want %q", cg.slices, tt.slices)
			}
		})
	}
}

// Every recorded layout is also a seed of FuzzCgroupFile.
func FuzzCgroupFile(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "cgroup", "*.txt"))
	for _, p := range files {
		b, _ := os.ReadFile(p)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		cg, err := cgroupOf(b)
		if err != nil {
			return
		}
		if !strings.HasPrefix(cg.path, "/") {
			t.Fatalf("path %q is not absolute", cg.path)
		}
		if cg.containerID != "" && !isContainerID(cg.containerID) {
			t.Fatalf("container id %q", cg.containerID)
		}
		if cg.unit != "" && !isUnitName(cg.unit) {
			t.Fatalf("unit %q", cg.unit)
		}
		if cg.unit != "" && !strings.Contains(cg.path, "/"+cg.unit) {
			t.Fatalf("unit %q not in path %q", cg.unit, cg.path)
		}
		if cg.containerID != "" && !strings.Contains(cg.path, cg.containerID) {
			t.Fatalf("container %q not in path %q", cg.containerID, cg.path)
		}
		for _, c := range strings.Split(cg.path, "/") {
			if c == ".." {
				t.Fatalf("accepted %q", cg.path)
			}
		}
	})
}

func u32(n uint32) *uint32 { return &n }

// TestMatchesPeer: every field a registration gives must match, tokens
// select among token registrations, and a cgroup that could not be read
// matches no cgroup-based field.
func TestMatchesPeer(t *testing.T) {
	pool := cache.NewPool()
	tok := strings.Repeat("ab", 32)
	info := func(file string) *identity {
		b, err := os.ReadFile(filepath.Join("testdata", "cgroup", file+".txt"))
		if err != nil {
			t.Fatal(err)
		}
		cg, err := cgroupOf(b)
		return &identity{cg: cg, cgErr: err}
	}
	withToken := func(id *identity, tok string) *identity { id.token = []byte(tok); return id }
	gone := &identity{cgErr: errPeerGone}
	for _, tt := range []struct {
		name  string
		match Match
		uid   uint32
		id    *identity
		want  bool
	}{
		{"UID", Match{UID: u32(1001)}, 1001, info("systemd-v2"), true},
		{"UIDOther", Match{UID: u32(1001)}, 1002, info("systemd-v2"), false},
		{"UIDWhenCgroupUnknown", Match{UID: u32(1001)}, 1001, gone, true},
		{"Unit", Match{SystemdUnit: "train.service"}, 5, info("systemd-hybrid"), true},
		{"UnitSub", Match{SystemdUnit: "train.service"}, 5, info("systemd-delegated-sub"), true},
		{"UnitOther", Match{SystemdUnit: "eval.service"}, 5, info("systemd-v2"), false},
		{"UnitUserSpoof", Match{SystemdUnit: "train.service"}, 1000, info("user-unit-spoof-v2"), false},
		{"UnitAndUID", Match{SystemdUnit: "train.service", UID: u32(7)}, 7, info("systemd-v2"), true},
		{"UnitButNotUID", Match{SystemdUnit: "train.service", UID: u32(7)}, 8, info("systemd-v2"), false},
		{"UnitWhenCgroupUnknown", Match{SystemdUnit: "train.service"}, 5, gone, false},
		{"Slice", Match{SystemdUnit: "ml-gpu.slice"}, 5, info("systemd-nested-slice"), true},
		{"SliceNotUserSlice", Match{SystemdUnit: "app.slice"}, 1000, info("user-unit-spoof-v2"), false},
		{"Cgroup", Match{Cgroup: "/system.slice/train.service"}, 5, info("systemd-delegated-sub"), true},
		{"CgroupBoundary", Match{Cgroup: "/system.slice/train.serv"}, 5, info("systemd-v2"), false},
		{"CgroupDocker", Match{Cgroup: "/docker"}, 0, info("docker-cgroupfs-hybrid"), true},
		{"ContainerFull", Match{ContainerID: dockerID}, 0, info("docker-cgroupfs-hybrid"), true},
		{"ContainerShort", Match{ContainerID: dockerID[:12]}, 0, info("docker-systemd-v2"), true},
		{"ContainerOther", Match{ContainerID: k8sID}, 0, info("docker-systemd-v2"), false},
		{"ContainerCRI", Match{ContainerID: k8sID}, 0, info("containerd-k8s-systemd-v2"), true},
		{"ContainerCRIO", Match{ContainerID: crioID}, 0, info("crio-systemd-v2"), true},
		{"ContainerCRIOConmon", Match{ContainerID: crioID}, 0, info("crio-conmon-v2"), false},
		{"ContainerPodman", Match{ContainerID: podmanID}, 0, info("podman-systemd-v2"), true},
		{"ContainerRootlessNeedsUID", Match{ContainerID: podmanID}, 1000, info("podman-rootless-v2"), false},
		{"ContainerRootlessWithUID", Match{ContainerID: podmanID, UID: u32(1000)}, 1000, info("podman-rootless-v2"), true},
		{"ContainerUserSpoof", Match{ContainerID: dockerID}, 1000, info("user-docker-spoof-v2"), false},
		{"ContainerOutsideNamespace", Match{ContainerID: dockerID}, 0, info("outside-namespace-v2"), false},
		{"PodSystemd", Match{PodUID: "0a1b2c3d-4e5f-6789-abcd-ef0123456789"}, 0, info("containerd-k8s-systemd-v2"), true},
		{"PodCgroupfs", Match{PodUID: "a0178de9-9963-4c21-a277-14564e7abd2b"}, 0, info("containerd-k8s-cgroupfs-hybrid"), true},
		{"PodCRIO", Match{PodUID: "b34634ea-cd65-4099-bee5-ad4de9264ffb"}, 0, info("crio-systemd-v2"), true},
		{"PodOther", Match{PodUID: "a0178de9-9963-4c21-a277-14564e7abd2b"}, 0, info("crio-systemd-v2"), false},
		{"PodConmon", Match{PodUID: "b34634ea-cd65-4099-bee5-ad4de9264ffb"}, 0, info("crio-conmon-v2"), false},
		{"PodNotContainer", Match{PodUID: "b34634ea-cd65-4099-bee5-ad4de9264ffb"}, 0, info("docker-systemd-v2"), false},
		{"PodUserSpoof", Match{PodUID: "b34634ea-cd65-4099-bee5-ad4de9264ffb", UID: u32(1000)}, 1000, info("user-kubepods-spoof-v2"), false},
		{"PodAndUID", Match{PodUID: "b34634ea-cd65-4099-bee5-ad4de9264ffb", UID: u32(1001)}, 1001, info("crio-systemd-v2"), true},
		{"PodButNotUID", Match{PodUID: "b34634ea-cd65-4099-bee5-ad4de9264ffb", UID: u32(1001)}, 1002, info("crio-systemd-v2"), false},
		{"PodWhenCgroupUnknown", Match{PodUID: "b34634ea-cd65-4099-bee5-ad4de9264ffb"}, 0, gone, false},
		{"Token", Match{Token: true}, 5, withToken(info("systemd-v2"), tok), true},
		{"TokenWrong", Match{Token: true}, 5, withToken(info("systemd-v2"), strings.Repeat("cd", 32)), false},
		{"TokenShort", Match{Token: true}, 5, withToken(info("systemd-v2"), tok[:10]), false},
		{"TokenMissing", Match{Token: true}, 5, info("systemd-v2"), false},
		{"TokenAndUID", Match{Token: true, UID: u32(5)}, 5, withToken(info("systemd-v2"), tok), true},
		{"TokenButNotUID", Match{Token: true, UID: u32(5)}, 6, withToken(info("systemd-v2"), tok), false},
		// A peer that presents a token is not taken for a uid registration.
		{"TokenToUIDRegistration", Match{UID: u32(5)}, 5, withToken(info("systemd-v2"), tok), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := &workload{reg: Registration{ID: "w", Match: tt.match}}
			if tt.match.Token {
				w.token = pool.Copy([]byte(tok))
				defer w.token.Free()
			}
			if got := w.matchesPeer(peer{uid: tt.uid, gid: tt.uid, id: tt.id}); got != tt.want {
				t.Fatalf("matches = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestMatchRefusals: zero or several matches are refused with what the
// agent saw of the caller, and never the token.
func TestMatchRefusals(t *testing.T) {
	a := testAgent(t)
	tok := strings.Repeat("0f", 32)
	for _, w := range []*workload{
		{reg: Registration{ID: "a", Match: Match{SystemdUnit: "train.service"}}},
		{reg: Registration{ID: "b", Match: Match{UID: u32(7)}}},
	} {
		a.workloads[w.reg.ID] = w
		a.index.add(w)
	}
	b, _ := os.ReadFile("testdata/cgroup/systemd-v2.txt")
	cg, _ := cgroupOf(b)
	_, e := a.match(peer{uid: 7, gid: 7, id: &identity{cg: cg}})
	if e == nil || e.Code != CodeWorkloadAmbiguous || !strings.Contains(e.Message, "a, b") || !strings.Contains(e.Message, "unit train.service") {
		t.Fatalf("ambiguous: %v", e)
	}
	_, e = a.match(peer{uid: 8, gid: 8, id: &identity{cg: cgroupInfo{path: "/x", delegatedUID: -1}, token: []byte(tok)}})
	if e == nil || e.Code != CodeWorkloadUnknown || !strings.Contains(e.Message, "uid 8 gid 8, cgroup /x, no systemd unit, no container, a token") || strings.Contains(e.Message, tok) {
		t.Fatalf("unknown: %v", e)
	}
	_, e = a.match(peer{uid: 9, gid: 9, id: &identity{cgErr: errPeerGone}})
	if e == nil || e.Code != CodeWorkloadUnknown || !strings.Contains(e.Message, "cgroup unknown (the connecting process exited") {
		t.Fatalf("gone: %v", e)
	}
	if w, e := a.match(peer{uid: 7, gid: 7, id: &identity{cg: cgroupInfo{path: "/", delegatedUID: -1}}}); e != nil || w.reg.ID != "b" {
		t.Fatalf("one match: %v %v", w, e)
	}
}

func TestRegistrationMatchFields(t *testing.T) {
	for _, tt := range []struct {
		match string
		err   string
	}{
		{`{"systemd_unit":"train.service"}`, ""},
		{`{"systemd_unit":"kubepods-burstable.slice"}`, ""},
		{`{"systemd_unit":"train"}`, "systemd_unit must be"},
		{`{"systemd_unit":"../x.service"}`, "systemd_unit must be"},
		{`{"cgroup":"/system.slice/train.service"}`, ""},
		{`{"cgroup":"/"}`, "cgroup must be"},
		{`{"cgroup":"/a/../b"}`, "cgroup must be"},
		{`{"cgroup":"/a/"}`, "cgroup must be"},
		{`{"cgroup":"a/b"}`, "cgroup must be"},
		{`{"container_id":"` + dockerID + `"}`, ""},
		{`{"container_id":"` + dockerID[:12] + `"}`, ""},
		{`{"container_id":"` + dockerID[:11] + `"}`, "container_id must be"},
		{`{"container_id":"` + strings.ToUpper(dockerID) + `"}`, "container_id must be"},
		{`{"pod_uid":"b34634ea-cd65-4099-bee5-ad4de9264ffb"}`, ""},
		{`{"pod_uid":"6c5e1b9d3f2a4e8b9c0d1e2f3a4b5c6d"}`, ""},
		{`{"pod_uid":"B34634EA-cd65-4099-bee5-ad4de9264ffb"}`, "pod_uid must be"},
		{`{"pod_uid":"b34634ea_cd65_4099_bee5_ad4de9264ffb"}`, "pod_uid must be"},
		{`{"pod_uid":"b34634ea-cd65-4099-bee5"}`, "pod_uid must be"},
		{`{"token":true}`, ""},
		{`{"token":true,"uid":5,"systemd_unit":"a.service","cgroup":"/x","container_id":"` + dockerID + `"}`, ""},
	} {
		t.Run(tt.match, func(t *testing.T) {
			_, err := parseRegistration([]byte(`{"id":"w","user":"u","project":"p","match":` + tt.match + `}`))
			if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err) || codeOf(err).Code != CodeInvalidRequest) {
				t.Fatalf("err = %v, want %q", err, tt.err)
			}
		})
	}
}

func TestParseStatStart(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want uint64
		err  bool
	}{
		{"1234 (sleep) S 1 1234 1234 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0", 987654, false},
		// comm may hold spaces and parentheses.
		{"1234 (a) b) (c) S 1 1234 1234 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 42 1000", 42, false},
		{"1234 (x) S 1 2 3", 0, true},
		{"no parens", 0, true},
		{"1 (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 notanumber 0", 0, true},
	} {
		got, err := parseStatStart([]byte(tt.in))
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("parseStatStart(%q) = %d, %v", tt.in, got, err)
		}
	}
}

// TestCheckStart is the decision of the start-time check kernels without
// SO_PEERPIDFD get.
func TestCheckStart(t *testing.T) {
	for _, tt := range []struct {
		name                    string
		before, after, accepted uint64
		afterErr                error
		ok                      bool
	}{
		{"Same", 100, 100, 150, nil, true},
		{"StartedInTheAcceptTick", 150, 150, 150, nil, true},
		{"AcceptUnknown", 100, 100, 0, nil, true},
		{"ReusedDuringRead", 100, 130, 150, nil, false},
		{"GoneDuringRead", 100, 0, 150, errors.New("no such process"), false},
		{"StartedAfterAccept", 160, 160, 150, nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := checkStart(tt.before, tt.after, tt.afterErr, tt.accepted); (err == nil) != tt.ok {
				t.Fatalf("checkStart = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

// TestReadProcStartTime: on the start-time path (no pidfd), a process that
// started after the connection was accepted is not the peer, and one that
// started before is read.
func TestReadProcStartTime(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep:", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	start, err := procStartTicks("/proc/" + strconv.Itoa(cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	p := peer{pid: int32(cmd.Process.Pid), accepted: start - 1} // accepted a tick before it started: a recycled pid
	if _, err := p.readProc("cgroup", maxCgroupFile); !errors.Is(err, errPeerGone) {
		t.Fatalf("recycled pid read: %v", err)
	}
	p.accepted = bootTicks()
	b, err := p.readProc("cgroup", maxCgroupFile)
	if err != nil || !bytes.Contains(b, []byte("::")) {
		t.Fatalf("read: %q %v", b, err)
	}
}

// TestPeerPidfd: over a real socket, the pidfd path reads the peer's
// cgroup while it lives and refuses once it has exited and been reaped,
// and the start-time path refuses a pid whose process is gone.
func TestPeerPidfd(t *testing.T) {
	dir, err := os.MkdirTemp("", "el")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "s")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, pidfd := range []bool{true, false} {
		name := map[bool]string{true: "Pidfd", false: "StartTime"}[pidfd]
		t.Run(name, func(t *testing.T) {
			usePidfd = pidfd
			defer func() { usePidfd = true }()
			// A peer that connects, then waits for its stdin to close.
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperConnect$")
			cmd.Env = append(os.Environ(), "ENVLET_TEST_CONNECT="+sock)
			stdin, _ := cmd.StdinPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			c, err := l.AcceptUnix()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			p, err := verifiedPeerOf(c)
			if err != nil {
				t.Fatal(err)
			}
			defer p.release()
			if p.hasPidfd != pidfd || int(p.pid) != cmd.Process.Pid {
				t.Fatalf("peer %+v (pid %d)", p, cmd.Process.Pid)
			}
			if _, err := p.readProc("cgroup", maxCgroupFile); err != nil {
				t.Fatalf("read while alive: %v", err)
			}
			stdin.Close()
			cmd.Wait()
			if _, err := p.readProc("cgroup", maxCgroupFile); !errors.Is(err, errPeerGone) {
				t.Fatalf("read after exit: %v", err)
			}
		})
	}
}

// TestHelperConnect is the peer of TestPeerPidfd, run as a child process.
func TestHelperConnect(t *testing.T) {
	sock := os.Getenv("ENVLET_TEST_CONNECT")
	if sock == "" {
		t.Skip("helper for TestPeerPidfd")
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		os.Exit(1)
	}
	var b [1]byte
	os.Stdin.Read(b[:])
	c.Close()
	os.Exit(0)
}

// FuzzProcStat: the start-time field of /proc/PID/stat, whatever the
// command name holds.
func FuzzProcStat(f *testing.F) {
	f.Add([]byte("1234 (sleep) S 1 1234 1234 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10"))
	f.Add([]byte("1 (a) b) (c) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 42 0"))
	f.Add([]byte("7 () Z"))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := parseStatStart(b)
		if err != nil {
			return
		}
		i := bytes.LastIndexByte(b, ')')
		f := strings.Fields(string(b[i+1:]))
		if w, err := strconv.ParseUint(f[19], 10, 64); err != nil || w != v {
			t.Fatalf("start %d from %q", v, b)
		}
	})
}

// FuzzProcStatus: the Groups: line of /proc/PID/status.
func FuzzProcStatus(f *testing.F) {
	f.Add([]byte("Name:\tbash\nUid:\t0\t0\t0\t0\nGroups:\t4 24 27 1000 \nNSpid:\t1\n"))
	f.Add([]byte("Groups:\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, g := range parseStatusGroups(b) {
			if g < 0 {
				t.Fatalf("group %d from %q", g, b)
			}
		}
	})
}

// TestWorkloadIndex: match sees a registration under its current uid only,
// and registrations without a uid for every caller.
func TestWorkloadIndex(t *testing.T) {
	a := testAgent(t)
	put := func(id string, m Match) {
		t.Helper()
		if err := a.putWorkload(&Registration{ID: id, User: "u", Project: "p", Match: m}, sourceFile); err != nil {
			t.Fatal(err)
		}
	}
	gid := u32(9)
	put("by-uid", Match{UID: u32(7)})
	put("by-gid", Match{GID: gid})
	if w, e := a.match(peer{uid: 7, gid: 1}); e != nil || w.reg.ID != "by-uid" {
		t.Fatalf("uid 7: %v %v", w, e)
	}
	if w, e := a.match(peer{uid: 3, gid: 9}); e != nil || w.reg.ID != "by-gid" {
		t.Fatalf("gid 9: %v %v", w, e)
	}
	put("by-uid", Match{UID: u32(8)}) // moved to another uid
	if _, e := a.match(peer{uid: 7, gid: 1}); e == nil || e.Code != CodeWorkloadUnknown {
		t.Fatalf("uid 7 after the move: %v", e)
	}
	if w, e := a.match(peer{uid: 8, gid: 1}); e != nil || w.reg.ID != "by-uid" {
		t.Fatalf("uid 8: %v %v", w, e)
	}
	a.removeWorkload("by-uid", sourceFile)
	if _, e := a.match(peer{uid: 8, gid: 1}); e == nil {
		t.Fatal("uid 8 matched after removal")
	}
	if len(a.index.byUID) != 0 || len(a.index.other) != 1 {
		t.Fatalf("index left %d uid entries, %d others", len(a.index.byUID), len(a.index.other))
	}
}
