package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestUnreachable(t *testing.T) {
	dir := shortTempDir(t)
	missing := filepath.Join(dir, "missing.sock")

	// A socket file nobody listens on any more: connection refused.
	refused := filepath.Join(dir, "refused.sock")
	ln, err := net.Listen("unix", refused)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()

	for _, tt := range []struct {
		name, socket, errOut string
	}{
		{"Missing", missing, "envlet: AGENT_UNAVAILABLE: connect " + missing + ": no such file or directory\n"},
		{"Refused", refused, "envlet: AGENT_UNAVAILABLE: connect " + refused + ": connection refused\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := runCLI(t, "", "env", "set", "--socket", tt.socket, "TOKEN", "canary-unreachable")
			if out != "" || errOut != tt.errOut || code != 1 {
				t.Errorf("exit %d, stdout %q, stderr\n%q\nwant\n%q", code, out, errOut, tt.errOut)
			}
		})
	}
}

func TestConnectionDropped(t *testing.T) {
	s := startStub(t, 200, "")
	s.hijack = true
	_, errOut, code := runCLI(t, "", "--socket", s.socket, "status")
	if code != 1 || !strings.HasPrefix(errOut, "envlet: AGENT_UNAVAILABLE: GET /v1/status: ") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

// TestSocketSelection: --socket, else $ENVLET_ADMIN_SOCKET, else the default.
func TestSocketSelection(t *testing.T) {
	s := startStub(t, 200, `{"user":"alice","uid":1001,"admin":false}`)
	bad := filepath.Join(shortTempDir(t), "nobody.sock")

	t.Setenv("ENVLET_ADMIN_SOCKET", s.socket)
	if out, errOut, code := runCLI(t, "", "whoami"); code != 0 || out != "user: alice\nuid: 1001\nadmin: false\n" {
		t.Errorf("from $ENVLET_ADMIN_SOCKET: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	t.Setenv("ENVLET_ADMIN_SOCKET", bad)
	if out, errOut, code := runCLI(t, "", "whoami", "--socket", s.socket); code != 0 || out == "" {
		t.Errorf("--socket over $ENVLET_ADMIN_SOCKET: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if _, errOut, code := runCLI(t, "", "whoami"); code != 1 || !strings.Contains(errOut, "connect "+bad+":") {
		t.Errorf("bad $ENVLET_ADMIN_SOCKET: exit %d, stderr %q", code, errOut)
	}

	t.Setenv("ENVLET_ADMIN_SOCKET", "")
	if _, err := os.Stat(defaultSocket); err == nil {
		t.Skip("a real agent listens on " + defaultSocket)
	}
	if _, errOut, code := runCLI(t, "", "whoami"); code != 1 || !strings.HasPrefix(errOut, "envlet: AGENT_UNAVAILABLE: connect "+defaultSocket+": ") {
		t.Errorf("default socket: exit %d, stderr %q", code, errOut)
	}
}

// TestNoValueLeaks: a value given on the command line or stdin, or sent by
// the agent where it should not be, never reaches stderr, and a masked reply
// prints only the mask.
func TestNoValueLeaks(t *testing.T) {
	const canary = "c4n4ry-s3cr3t"
	for _, tt := range []struct {
		name   string
		args   []string
		stdin  string
		status int
		reply  string
	}{
		{"MaskedGet", []string{"env", "get", "API_TOKEN"}, "", 200, varMasked},
		{"MaskedSetReply", []string{"env", "set", "API_TOKEN", canary}, "", 200, varMasked},
		{"MaskedList", []string{"env", "list"}, "", 200, "[" + varMasked + "]"},
		{"MaskedExplain", []string{"explain", "--workload", "w"}, "", 200,
			`[{"name":"API_TOKEN","value":"********","masked":true,"layer":"account","overrides":[]}]`},
		{"ErrorOnSet", []string{"env", "set", "X", canary}, "", 400,
			apiErr("ENV_VAR_INVALID_VALUE", "value of X holds a NUL byte")},
		{"ErrorOnStdin", []string{"env", "create", "X", "--value-stdin"}, canary + "\n", 409,
			apiErr("ENV_VAR_ALREADY_EXISTS", "variable X already exists")},
		{"DashValueAsFlag", []string{"env", "set", "X", "-" + canary}, "", 200, varFoo},
		{"DoubleDashValueAsFlag", []string{"env", "create", "X", "--" + canary}, "", 200, varFoo},
		{"DashValueProjectEnv", []string{"project", "env", "set", "p", "X", "--" + canary + "=1"}, "", 200, varFoo},
		{"ValueInBadErrorBody", []string{"env", "set", "X", "v"}, "", 500, `<pre>` + canary + `</pre>`},
		{"ValueInBrokenReply", []string{"env", "list"}, "", 200, `[{"name":"X","value":"` + canary},
		{"ValueInSyntaxError", []string{"env", "get", "X"}, "", 200, `{"name":"X","value":` + canary + `}`},
		{"NumberInTypeError", []string{"env", "get", "X"}, "", 200, `{"name":"X","value":4242424242}`},
		{"ValueInWorkloadFile", []string{"workload", "register", "-"}, "", 400,
			apiErr("INVALID_REQUEST", "unknown field \"runtim\"")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := startStub(t, tt.status, tt.reply)
			stdin := tt.stdin
			if tt.name == "ValueInWorkloadFile" {
				stdin = `{"id":"w","runtim":{"K":"` + canary + `"}}`
			}
			out, errOut, code := runCLI(t, stdin, append([]string{"--socket", s.socket}, tt.args...)...)
			if strings.Contains(out, canary) || strings.Contains(errOut, canary) || strings.Contains(errOut, "4242424242") {
				t.Errorf("value leaked: exit %d\nstdout %q\nstderr %q", code, out, errOut)
			}
			if strings.HasPrefix(tt.name, "Masked") && (code != 0 || (!strings.Contains(out, "********") && tt.name != "MaskedSetReply")) {
				t.Errorf("masked reply: exit %d, stdout %q, stderr %q", code, out, errOut)
			}
			if !strings.HasPrefix(tt.name, "Masked") && code == 0 {
				t.Errorf("exit 0, want a failure; stdout %q", out)
			}
		})
	}
}
