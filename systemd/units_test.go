// Package systemd_test checks the unit files, sysusers.d and tmpfiles.d
// files in this directory with systemd's own tools, offline: systemd need
// not run. Without the tools the tests skip, except in CI (CI=true), where
// they must run (.ci/run installs them).
package systemd_test

import (
	"bufio"
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// tool returns the path of a systemd tool, or skips (fails in CI).
func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found; CI must have it (apt-get install systemd)", name)
		}
		t.Skipf("%s not found (apt-get install systemd)", name)
	}
	return p
}

// units are the unit files this package ships, and where they go.
var (
	shipped  = []string{"envletd.service", "envletd.socket", "envletd-admin.socket", "envletd-credentials.socket"}
	examples = []string{"examples/model-server.service", "examples/legacy-app.service",
		"examples/legacy-app-env.path", "examples/legacy-app-env.service", "examples/db-client.service"}
)

// root lays out a file system root for systemd-analyze --root: systemd's
// own units from this machine (sysinit.target and friends), our units in
// /etc/systemd/system, with the etcd drop-in if asked, and an executable
// stub at every path an Exec*= line names, since verify checks they exist.
func root(t *testing.T, etcd bool) string {
	t.Helper()
	r := t.TempDir()
	sys := filepath.Join(r, "etc/systemd/system")
	var own []string
	for _, u := range append(slices.Clone(shipped), examples...) {
		copyFile(t, u, filepath.Join(sys, filepath.Base(u)), 0o644)
		own = append(own, u)
	}
	if etcd {
		copyFile(t, "examples/envletd-etcd.conf", filepath.Join(sys, "envletd.service.d/etcd.conf"), 0o644)
		own = append(own, "examples/envletd-etcd.conf")
	}
	// systemd's units: wherever this distribution keeps them.
	for _, dir := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			dst := filepath.Join(r, "usr/lib/systemd/system", strings.TrimPrefix(p, dir))
			if d.Type()&fs.ModeSymlink != 0 {
				target, _ := os.Readlink(p)
				os.MkdirAll(filepath.Dir(dst), 0o755)
				os.Symlink(target, dst)
				return nil
			}
			copyFile(t, p, dst, 0o644)
			return nil
		})
		break
	}
	for _, u := range own {
		for _, prog := range execPaths(t, u) {
			copyFile(t, "/bin/true", filepath.Join(r, prog), 0o755)
		}
	}
	return r
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}

// execPaths returns the program of every Exec*= line of a unit.
func execPaths(t *testing.T, unit string) []string {
	var out []string
	for _, kv := range directives(t, unit) {
		if !strings.HasPrefix(kv[0], "Exec") {
			continue
		}
		prog := strings.TrimLeft(strings.Fields(kv[1])[0], "@-:+!")
		out = append(out, prog)
	}
	return out
}

// directives returns the key=value lines of a unit, in order (sections
// are not told apart: no key here is in two).
func directives(t *testing.T, unit string) [][2]string {
	t.Helper()
	f, err := os.Open(unit)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][2]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not key=value: %q", unit, line)
		}
		out = append(out, [2]string{strings.TrimSpace(k), strings.TrimSpace(v)})
	}
	return out
}

// values returns every value of key in unit.
func values(t *testing.T, unit, key string) []string {
	var out []string
	for _, kv := range directives(t, unit) {
		if kv[0] == key {
			out = append(out, kv[1])
		}
	}
	return out
}

func TestVerify(t *testing.T) {
	analyze := tool(t, "systemd-analyze")
	r := root(t, true)
	var names []string
	for _, u := range append(slices.Clone(shipped), examples...) {
		names = append(names, filepath.Base(u))
	}
	cmd := exec.Command(analyze, append([]string{"verify", "--root=" + r, "--recursive-errors=yes", "--man=no"}, names...)...)
	out, err := cmd.CombinedOutput()
	// Any output is a finding (an unknown key, a bad value, a missing
	// unit): verify reports some only as warnings.
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// The agent's sandboxing may not regress: systemd rates envletd.service
// 1.4 ("OK") here; the threshold leaves room for systemd versions that
// weigh the items differently, not for a lost directive.
func TestSecurity(t *testing.T) {
	analyze := tool(t, "systemd-analyze")
	for _, tt := range []struct {
		etcd      bool
		threshold string
	}{{false, "20"}, {true, "30"}} {
		r := root(t, tt.etcd)
		out, err := exec.Command(analyze, "security", "--offline=true", "--root="+r, "--threshold="+tt.threshold, "--no-pager", "envletd.service").CombinedOutput()
		if err != nil {
			t.Fatalf("systemd-analyze security (etcd drop-in: %v): %v\n%s", tt.etcd, err, out)
		}
		if i := bytes.Index(out, []byte("Overall exposure level")); i >= 0 {
			t.Logf("etcd drop-in %v: %s", tt.etcd, bytes.TrimSpace(out[i:]))
		}
	}
}

// What the agent relies on, beyond what verify can know.
func TestUnitContents(t *testing.T) {
	for _, tt := range []struct {
		unit, key string
		want      []string
	}{
		{"envletd.service", "Type", []string{"notify"}},
		{"envletd.service", "ExecStart", []string{"/usr/bin/envletd -config /etc/envlet/envletd.conf"}},
		{"envletd.service", "Restart", []string{"on-failure"}},
		{"envletd.service", "RuntimeDirectoryPreserve", []string{"yes"}}, // mounts and sockets outlive a restart
		{"envletd.service", "ProtectProc", nil},                          // the agent reads its peers' /proc
		{"envletd.service", "PrivateUsers", nil},                         // and their real uids
		{"envletd.service", "User", nil},                                 // root: mounts and tokens belong to every uid
		{"envletd.socket", "ListenStream", []string{"/run/envlet/workload.sock"}},
		{"envletd.socket", "FileDescriptorName", []string{"workload"}},
		{"envletd.socket", "SocketMode", []string{"0666"}},
		{"envletd-admin.socket", "ListenStream", []string{"/run/envlet/admin.sock"}},
		{"envletd-admin.socket", "FileDescriptorName", []string{"admin"}},
		{"envletd-admin.socket", "SocketMode", []string{"0666"}},
		{"envletd-admin.socket", "SocketGroup", []string{"envlet-admin"}},
		{"envletd-admin.socket", "Service", []string{"envletd.service"}},
		{"envletd-credentials.socket", "ListenStream", []string{"/run/envlet/credentials.sock"}},
		{"envletd-credentials.socket", "FileDescriptorName", []string{"credentials"}},
		{"envletd-credentials.socket", "SocketMode", []string{"0600"}},
		{"envletd-credentials.socket", "Service", []string{"envletd.service"}},
	} {
		if got := values(t, tt.unit, tt.key); !slices.Equal(got, tt.want) {
			t.Errorf("%s: %s = %q, want %q", tt.unit, tt.key, got, tt.want)
		}
	}
	for _, key := range []string{"WatchdogSec", "LimitMEMLOCK", "StateDirectory", "LogsDirectory", "ProtectSystem",
		"ProtectHome", "NoNewPrivileges", "PrivateTmp", "CapabilityBoundingSet", "SystemCallFilter", "RestrictAddressFamilies"} {
		if len(values(t, "envletd.service", key)) == 0 {
			t.Errorf("envletd.service lacks %s=", key)
		}
	}
}

// systemd-tmpfiles and systemd-sysusers apply our files to a scratch root.
func TestTmpfilesSysusers(t *testing.T) {
	tmpfiles, sysusers := tool(t, "systemd-tmpfiles"), tool(t, "systemd-sysusers")
	r := t.TempDir()
	conf, _ := filepath.Abs("tmpfiles.d/envlet.conf")
	if out, err := exec.Command(tmpfiles, "--create", "--root="+r, conf).CombinedOutput(); err != nil {
		t.Fatalf("systemd-tmpfiles: %v\n%s", err, out)
	}
	for _, tt := range []struct {
		path string
		mode os.FileMode
	}{
		{"run/envlet", 0o755}, {"run/envlet/mounts", 0o755}, {"run/envlet/tokens", 0o711},
		{"etc/envlet/workloads.d", 0o755}, {"var/lib/envlet", 0o700}, {"var/log/envlet", 0o750},
	} {
		fi, err := os.Stat(filepath.Join(r, tt.path))
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != tt.mode {
			t.Errorf("/%s: %v, %v; want a directory with mode %o", tt.path, fi, err, tt.mode)
		}
	}
	conf, _ = filepath.Abs("sysusers.d/envlet.conf")
	if out, err := exec.Command(sysusers, "--root="+r, conf).CombinedOutput(); err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	group, err := os.ReadFile(filepath.Join(r, "etc/group"))
	if err != nil || !bytes.Contains(group, []byte("\nenvlet-admin:")) && !bytes.HasPrefix(group, []byte("envlet-admin:")) {
		t.Fatalf("/etc/group after systemd-sysusers: %q, %v", group, err)
	}
}
