package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// envlet-exec runs in front of every workload, often in images that should
// stay small, so what it links is held down by test (after tailscaled's
// deps_test.go). Each package below was kept out on purpose; the list names
// only what the launcher does without, so a failure here means a real
// regression, not a wish. reflect is absent from it: golang.org/x/sys/unix
// imports it through encoding/binary, and the linker drops what goes unused.
var forbidden = []string{
	"net",      // the socket is a raw fd: net alone adds some 600 KB
	"net/http", // the admin API's, not the launcher's
	"crypto/tls",
	"encoding/json", // the wire format is binary
	"fmt",           // messages are concatenated strings
	"flag",          // flags are parsed by hand
	"os/exec",       // we execve ourselves
	"log",           // one line on stderr, no logger
	"github.com/hashicorp/go-hclog",
	"github.com/fsnotify/fsnotify",
	"github.com/coreos/go-systemd",
	"github.com/spf13/cobra",
	"github.com/spf13/pflag",
}

// Of this module, envlet-exec may link only these.
var ownAllowed = map[string]bool{
	"github.com/envlet/envlet/cmd/envlet-exec": true,
	"github.com/envlet/envlet/launcher":        true,
	"github.com/envlet/envlet/agent/wire":      true,
}

// maxSize bounds the stripped static binary. A plain Go program that only
// calls os is about 1.4 MB; the launcher adds about 100 KB (1,507,490
// bytes), and --watch another 86 KB (1,593,506): os/signal, fork/exec,
// the supervisor; retrying a busy agent one more page (1,597,602), and
// retrying an agent that restarts (a missing socket, a reply cut off)
// 750 bytes of text, which crosses into one more page (1,601,698). It
// keeps out time.Timer and time.ParseDuration (50 KB of
// time formatting and zone loading), errors.As (reflection) and
// unix.SignalNum (a map of every signal); see package launcher.
const maxSize = 1_610_000

func TestDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatal("go list -deps printed nothing")
	}
	for _, dep := range deps {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				t.Errorf("envlet-exec imports %s; it must not (see forbidden)", dep)
			}
		}
		if strings.HasPrefix(dep, "github.com/envlet/envlet/") && !ownAllowed[dep] {
			t.Errorf("envlet-exec imports %s; of this module it may import only launcher and agent/wire", dep)
		}
	}
}

// Size is a property of the build, not a timing, so a test may bound it.
func TestBinarySize(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "envlet-exec")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("envlet-exec, CGO_ENABLED=0 -trimpath -ldflags='-s -w': %d bytes (limit %d)", fi.Size(), maxSize)
	if fi.Size() > maxSize {
		t.Fatalf("envlet-exec is %d bytes, over the %d-byte limit: see what it links with go tool nm -size -sort size", fi.Size(), maxSize)
	}
}
