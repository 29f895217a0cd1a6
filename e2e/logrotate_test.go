package e2e

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestAuditLogrotate rotates the audit log with Debian's logrotate and the
// config the .deb ships (packaging/deb/logrotate: its path and its
// systemctl line pointed at this agent) five times while launchers and a
// writer keep records coming. Every file is valid JSON lines, and every
// record is in exactly one file: one serve per launch, one set per
// acknowledged write.
func TestAuditLogrotate(t *testing.T) {
	lr, err := exec.LookPath("logrotate")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("logrotate is missing (.ci/run installs it)")
		}
		t.Skip("logrotate is missing: apt-get install logrotate")
	}
	a, uid := faultAgent(t)
	shipped, err := os.ReadFile("../packaging/deb/logrotate")
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.Replace(string(shipped), "/var/log/envlet/audit.log", a.audit, 1)
	const systemctl = "systemctl kill --kill-whom=main --signal=USR1 envletd.service"
	if !strings.Contains(conf, systemctl) {
		t.Fatalf("the shipped config does not signal the agent with %q", systemctl)
	}
	conf = strings.Replace(conf, systemctl, "kill -USR1 "+strconv.Itoa(a.cmd.Process.Pid), 1)
	confPath := filepath.Join(a.dir, "logrotate.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var launched atomic.Int64
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				cmd := exec.Command(bins.exec, "--", "/bin/true")
				cmd.Env = []string{"ENVLET_SOCKET=" + a.workSock}
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Errorf("launch: %v %s", err, out)
					return
				}
				launched.Add(1)
			}
		})
	}
	hc := adminHTTP(a.adminSock)
	var acked atomic.Int64
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if r := putVar(t, hc, fmt.Sprintf("W_%d", i), "v"); r.status != 200 {
				t.Errorf("put: %+v", r)
				return
			}
			acked.Add(1)
		}
	})
	state := filepath.Join(a.dir, "logrotate.state")
	const rotations = 5
	for n := 1; n <= rotations; n++ {
		// Let records accumulate, then rotate; the next rotation (which
		// compresses this one's file) waits until the agent has reopened.
		before := launched.Load()
		for launched.Load() < before+20 && !t.Failed() {
			time.Sleep(5 * time.Millisecond) // not a synchronisation: only lets records pile up
		}
		if out, err := exec.Command(lr, "-f", "-s", state, confPath).CombinedOutput(); err != nil {
			t.Fatalf("logrotate: %v\n%s", err, out)
		}
		a.waitLog("audit log reopened", n)
	}
	close(stop)
	wg.Wait()
	a.stop() // writes the queued serve records

	files, _ := filepath.Glob(a.audit + "*")
	if len(files) != rotations+1 {
		t.Fatalf("audit log files %v, want the log and %d rotated", files, rotations)
	}
	var paths []string
	for _, f := range files {
		if strings.HasSuffix(f, ".gz") {
			plain := strings.TrimSuffix(f, ".gz") + ".plain"
			gunzip(t, f, plain)
			paths = append(paths, plain)
			continue
		}
		paths = append(paths, f)
	}
	lines := map[string]bool{}
	serves, sets := 0, map[string]int{}
	for _, p := range paths {
		b, _ := os.ReadFile(p)
		for _, ln := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
			if len(ln) == 0 {
				continue
			}
			if lines[string(ln)] {
				t.Fatalf("a record is in two files: %s", ln)
			}
			lines[string(ln)] = true
		}
		for _, rec := range auditLines(t, p) { // each line one JSON object
			switch rec["action"] {
			case "serve":
				serves++
			case "set":
				sets[rec["name"].(string)]++
			}
		}
	}
	if serves != int(launched.Load()) {
		t.Errorf("%d serve records across the files, %d launches", serves, launched.Load())
	}
	for i := range int(acked.Load()) {
		if n := sets[fmt.Sprintf("W_%d", i)]; n != 1 {
			t.Errorf("W_%d: %d set records across the files, want 1", i, n)
		}
	}
	t.Logf("%d rotations, %d files, %d launches, %d writes: every record in exactly one file", rotations, len(files), launched.Load(), acked.Load())
}

func gunzip(t *testing.T, from, to string) {
	t.Helper()
	f, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", from, err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", from, err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
