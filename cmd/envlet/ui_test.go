package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestUIRefusesBeforeServing: a non-loopback address is a usage error, and
// an agent that is not there fails the command before any URL is printed.
// (The console itself is tested in a browser: e2e/console_test.go.)
func TestUIRefusesBeforeServing(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.sock")
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"ui", "--listen", "0.0.0.0:0"}, 2, "envlet: USAGE: ui: --listen \"0.0.0.0:0\": not a loopback IP address"},
		{[]string{"ui", "--listen", "nonsense"}, 2, "envlet: USAGE: ui: --listen \"nonsense\""},
		{[]string{"ui", "extra"}, 2, "envlet: USAGE: "},
		{[]string{"--socket", missing, "ui"}, 1, "envlet: AGENT_UNAVAILABLE: "},
	} {
		var out, errb bytes.Buffer
		code := run(context.Background(), tt.args, &out, &errb)
		if code != tt.code || !strings.HasPrefix(errb.String(), tt.want) || out.Len() != 0 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d, stderr %q…", tt.args, code, out.String(), errb.String(), tt.code, tt.want)
		}
	}
}
