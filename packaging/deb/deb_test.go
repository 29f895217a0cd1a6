// Package deb_test builds the .deb with `make deb`, as an operator would,
// and checks what dpkg would install: the tree, owners and modes, the
// conffiles, the control fields and the maintainer scripts.
package deb_test

import (
	"bytes"
	"debug/elf"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/envlet/envlet/agent"
)

const version = "1.2.3~test"

// build runs `make deb` into a temporary directory once per test binary.
var built struct {
	deb, tree, control string
	err                error
}

func build(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("dpkg-deb not found; CI must have it")
		}
		t.Skip("dpkg-deb not found")
	}
	if built.deb != "" || built.err != nil {
		if built.err != nil {
			t.Fatal(built.err)
		}
		return
	}
	if testing.Short() {
		t.Skip("builds every binary")
	}
	// Not t.TempDir: the package is shared by every test of the run.
	keep, err := os.MkdirTemp("", "envlet-debtest")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(keep, "dist")
	cmd := exec.Command("make", "deb", "DIST="+out, "VERSION="+version, "MAN="+filepath.Join(keep, "man"))
	cmd.Dir = "../.."
	if b, err := cmd.CombinedOutput(); err != nil {
		built.err = err
		t.Fatalf("make deb: %v\n%s", err, b)
	}
	arch := runtime.GOARCH
	built.deb = filepath.Join(out, "envlet_"+version+"_"+arch+".deb")
	built.tree, built.control = filepath.Join(keep, "tree"), filepath.Join(keep, "control")
	for _, args := range [][]string{{"-x", built.deb, built.tree}, {"-e", built.deb, built.control}} {
		if b, err := exec.Command("dpkg-deb", args...).CombinedOutput(); err != nil {
			built.err = err
			t.Fatalf("dpkg-deb %s: %v\n%s", args[0], err, b)
		}
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.tree != "" {
		os.RemoveAll(filepath.Dir(built.tree))
	}
	os.Exit(code)
}

// The files and directories the package installs, with their modes.
var want = map[string]os.FileMode{
	"usr/bin/envletd":                                            0o755,
	"usr/bin/envlet":                                             0o755,
	"usr/bin/envlet-exec":                                        0o755,
	"lib/systemd/system/envletd.service":                         0o644,
	"lib/systemd/system/envletd.socket":                          0o644,
	"lib/systemd/system/envletd-admin.socket":                    0o644,
	"lib/systemd/system/envletd-credentials.socket":              0o644,
	"usr/lib/sysusers.d/envlet.conf":                             0o644,
	"usr/lib/tmpfiles.d/envlet.conf":                             0o644,
	"etc/envlet/envletd.conf":                                    0o644,
	"etc/envlet/workloads.d":                                     fs.ModeDir | 0o755,
	"etc/logrotate.d/envlet":                                     0o644,
	"usr/share/doc/envlet/copyright":                             0o644,
	"usr/share/doc/envlet/README.md":                             0o644,
	"usr/share/doc/envlet/examples/container/Dockerfile":         0o644,
	"usr/share/doc/envlet/examples/systemd/model-server.service": 0o644,
	"usr/lib/python3/dist-packages/envlet/__init__.py":           0o644,
	"usr/lib/python3/dist-packages/envlet/workload.py":           0o644,
	"usr/lib/python3/dist-packages/envlet/py.typed":              0o644,
	"usr/share/doc/envlet/examples/prometheus/envlet-alerts.yml": 0o644,
	"usr/share/man/man1/envlet.1.gz":                             0o644,
	"usr/share/man/man1/envlet-status.1.gz":                      0o644,
	"usr/share/man/man1/envlet-exec.1.gz":                        0o644,
	"usr/share/man/man8/envletd.8.gz":                            0o644,
	"usr/share/bash-completion/completions/envlet":               0o644,
	"usr/share/zsh/vendor-completions/_envlet":                   0o644,
	"usr/share/fish/vendor_completions.d/envlet.fish":            0o644,
}

func TestTree(t *testing.T) {
	build(t)
	for path, mode := range want {
		fi, err := os.Lstat(filepath.Join(built.tree, path))
		if err != nil {
			t.Errorf("/%s: %v", path, err)
			continue
		}
		if got := fi.Mode() & (fs.ModeType | fs.ModePerm); got != mode {
			t.Errorf("/%s: mode %v, want %v", path, got, mode)
		}
	}
	// Every file in the package is root's (dpkg-deb --root-owner-group).
	out, err := exec.Command("dpkg-deb", "-c", built.deb).Output()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 1 && f[1] != "root/root" {
			t.Errorf("not root's: %s", strings.TrimSpace(line))
		}
	}
	// The shipped units are the ones in systemd/.
	for _, u := range []string{"envletd.service", "envletd.socket", "envletd-admin.socket", "envletd-credentials.socket"} {
		a, _ := os.ReadFile(filepath.Join("../../systemd", u))
		b, _ := os.ReadFile(filepath.Join(built.tree, "lib/systemd/system", u))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Errorf("lib/systemd/system/%s differs from systemd/%s", u, u)
		}
	}
}

func TestBinaries(t *testing.T) {
	build(t)
	// The launcher is static: it is copied into images of any libc.
	f, err := elf.Open(filepath.Join(built.tree, "usr/bin/envlet-exec"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("envlet-exec is dynamically linked")
		}
	}
	for _, b := range []string{"envletd", "envlet", "envlet-exec"} {
		out, err := exec.Command(filepath.Join(built.tree, "usr/bin", b), "--help").CombinedOutput()
		if err != nil && !bytes.Contains(out, []byte("usage")) && !bytes.Contains(out, []byte("Usage")) {
			t.Errorf("%s --help: %v\n%s", b, err, out)
		}
	}
}

func TestControl(t *testing.T) {
	build(t)
	control, err := os.ReadFile(filepath.Join(built.control, "control"))
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{}
	for line := range strings.Lines(string(control)) {
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, " ") {
			fields[k] = strings.TrimSpace(v)
		}
	}
	for k, v := range map[string]string{"Package": "envlet", "Version": version, "Architecture": runtime.GOARCH} {
		if fields[k] != v {
			t.Errorf("control %s: %q, want %q", k, fields[k], v)
		}
	}
	if fields["Description"] == "" || fields["Maintainer"] == "" || fields["Installed-Size"] == "" {
		t.Errorf("control lacks a field: %q", control)
	}
	conffiles, err := os.ReadFile(filepath.Join(built.control, "conffiles"))
	if err != nil || strings.TrimSpace(string(conffiles)) != "/etc/envlet/envletd.conf\n/etc/logrotate.d/envlet" {
		t.Errorf("conffiles: %q, %v; want /etc/envlet/envletd.conf and /etc/logrotate.d/envlet", conffiles, err)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		p := filepath.Join(built.control, s)
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: %v %v; want mode 0755", s, fi, err)
			continue
		}
		if out, err := exec.Command("sh", "-n", p).CombinedOutput(); err != nil {
			t.Errorf("sh -n %s: %v\n%s", s, err, out)
		}
	}
}

// The packaged config is one the agent accepts, and it keeps the key ring
// where envletd.service lets the agent write.
func TestConfig(t *testing.T) {
	build(t)
	path := filepath.Join(built.tree, "etc/envlet/envletd.conf")
	cfg, err := agent.LoadConfig([]string{"-config", path}, os.Stderr)
	if err != nil {
		t.Fatalf("the agent refuses the packaged config: %v", err)
	}
	if !strings.HasPrefix(cfg.KeyFile, "/var/lib/envlet/") || cfg.StateDir != "/var/lib/envlet" {
		t.Errorf("key_file %q, state_dir %q: both must be under StateDirectory=envlet", cfg.KeyFile, cfg.StateDir)
	}
	if cfg.WorkloadSocket != "/run/envlet/workload.sock" || cfg.AdminSocket != "/run/envlet/admin.sock" ||
		cfg.CredentialsSocket != "/run/envlet/credentials.sock" {
		t.Errorf("sockets %q %q %q differ from the socket units", cfg.WorkloadSocket, cfg.AdminSocket, cfg.CredentialsSocket)
	}
}

// postinst configure runs the tools it should, on the files the package
// installs. The tools are stubs that log their arguments: the real ones
// would change this machine.
func TestPostinst(t *testing.T) {
	build(t)
	stubs := t.TempDir()
	log := filepath.Join(stubs, "calls")
	for _, tool := range []string{"systemd-sysusers", "systemd-tmpfiles", "systemctl", "getent", "addgroup"} {
		script := "#!/bin/sh\necho \"" + tool + " $*\" >>" + log + "\n"
		if err := os.WriteFile(filepath.Join(stubs, tool), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("sh", filepath.Join(built.control, "postinst"), "configure", "")
	cmd.Env = []string{"PATH=" + stubs + ":/usr/bin:/bin"}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("postinst configure: %v\n%s", err, out)
	}
	calls, _ := os.ReadFile(log)
	lines := strings.Split(strings.TrimSpace(string(calls)), "\n")
	for _, wantCall := range []string{
		"systemd-sysusers /usr/lib/sysusers.d/envlet.conf",
		"systemd-tmpfiles --create /usr/lib/tmpfiles.d/envlet.conf",
	} {
		if !slices.Contains(lines, wantCall) {
			t.Errorf("postinst did not run %q; it ran %q", wantCall, lines)
		}
		// The file it names is in the package.
		f := wantCall[strings.LastIndexByte(wantCall, ' ')+1:]
		if _, err := os.Stat(filepath.Join(built.tree, f)); err != nil {
			t.Errorf("postinst names %s, which the package lacks", f)
		}
	}
	for _, l := range lines {
		if strings.Contains(l, "start") || strings.Contains(l, "enable") {
			t.Errorf("postinst starts or enables something: %q", l)
		}
	}
}

// TestPythonClient: the client the package carries imports with Debian's
// python3 from where dpkg puts it, and is the one in clients/python.
func TestPythonClient(t *testing.T) {
	build(t)
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("/usr/bin/python3 not found; CI must have it")
		}
		t.Skip("/usr/bin/python3 not found")
	}
	dist := filepath.Join(built.tree, "usr/lib/python3/dist-packages")
	cmd := exec.Command("/usr/bin/python3", "-I", "-c",
		"import sys; sys.path.insert(0, sys.argv[1]); import envlet, envlet.workload; print(envlet.__file__)", dist)
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != filepath.Join(dist, "envlet/__init__.py") {
		t.Fatalf("import envlet from the package: %v\n%s", err, out)
	}
	src, _ := filepath.Glob("../../clients/python/src/envlet/*.py")
	for _, f := range src {
		a, _ := os.ReadFile(f)
		b, err := os.ReadFile(filepath.Join(dist, "envlet", filepath.Base(f)))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s: not shipped as in clients/python (%v)", filepath.Base(f), err)
		}
	}
}

// TestLogrotate: the packaged logrotate config is read by logrotate
// without a complaint, names the audit log the packaged config writes,
// and signals the agent the way it reopens its log (SIGUSR1).
// e2e/logrotate_test.go runs it for real against an agent under load.
func TestLogrotate(t *testing.T) {
	build(t)
	path := filepath.Join(built.tree, "etc/logrotate.d/envlet")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	conf, _ := os.ReadFile(filepath.Join(built.tree, "etc/envlet/envletd.conf"))
	var auditLog, rotated string
	for _, line := range strings.Split(string(conf), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && strings.TrimSpace(k) == "audit_log" {
			auditLog, _, _ = strings.Cut(strings.TrimSpace(v), " ")
		}
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "/") {
			rotated = strings.Fields(line)[0]
		}
	}
	if auditLog == "" || rotated != auditLog {
		t.Errorf("logrotate rotates %q, the packaged config writes the audit log to %q", rotated, auditLog)
	}
	if !strings.Contains(string(b), "--signal=USR1 envletd.service") || !strings.Contains(string(b), "delaycompress") {
		t.Errorf("logrotate config does not reopen the log with SIGUSR1 before compressing it:\n%s", b)
	}
	lr, err := exec.LookPath("logrotate")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("logrotate is missing (.ci/run installs it)")
		}
		t.Skip("logrotate is missing")
	}
	// -d reads and checks the config and changes nothing.
	out, err := exec.Command(lr, "-d", "-s", filepath.Join(t.TempDir(), "state"), path).CombinedOutput()
	if err != nil || strings.Contains(string(out), "error:") {
		t.Fatalf("logrotate -d: %v\n%s", err, out)
	}
}
