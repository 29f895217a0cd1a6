package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/envlet/envlet/agent/wire"
)

// Helper processes: the test binary runs itself with ENVLET_E2E_HELPER set
// to play a peer that must be another process (another uid, one that
// exits). init runs before TestMain, so a helper never builds or tests.
func init() {
	if mode := os.Getenv("ENVLET_E2E_HELPER"); mode != "" {
		os.Exit(runHelper(mode, os.Args[1:]))
	}
}

func runHelper(mode string, args []string) int {
	switch mode {
	case "connect-pass":
		return helperConnectPass(args[0])
	case "flood":
		n, _ := strconv.Atoi(args[1])
		return helperFlood(args[0], n, args[2])
	}
	fmt.Fprintln(os.Stderr, "unknown helper", mode)
	return 2
}

var helperBin struct {
	once sync.Once
	path string
	err  error
}

// helperCmd runs the test binary as a helper. It is copied to a directory
// every uid can reach, since helpers run as other uids.
func helperCmd(t *testing.T, mode string, args ...string) *exec.Cmd {
	t.Helper()
	helperBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "elhelper")
		if err != nil {
			helperBin.err = err
			return
		}
		os.Chmod(dir, 0o755)
		src, err := os.ReadFile(os.Args[0])
		if err != nil {
			helperBin.err = err
			return
		}
		helperBin.path = filepath.Join(dir, "e2e-helper")
		helperBin.err = os.WriteFile(helperBin.path, src, 0o755)
	})
	if helperBin.err != nil {
		t.Fatal(helperBin.err)
	}
	cmd := exec.Command(helperBin.path, args...)
	cmd.Env = []string{"ENVLET_E2E_HELPER=" + mode, "PATH=/usr/bin:/bin"}
	cmd.Dir = "/"
	return cmd
}

var codeInHTTP = regexp.MustCompile(`"code":"([A-Z_]+)"`)

// helperFlood opens n connections to sock that misbehave (mode silent:
// send nothing; partial: half a frame header, then nothing), prints
// "connected", then one "code CODE" line per connection as the agent
// answers it (an Error frame, or an HTTP error on the admin socket), until
// its stdin closes.
func helperFlood(sock string, n int, mode string) int {
	var conns []net.Conn
	for i := 0; i < n; i++ {
		c, err := net.Dial("unix", sock)
		if err != nil {
			fmt.Println("dial-error", err)
			continue
		}
		switch mode {
		case "partial":
			c.Write([]byte("ENVL\x01"))
		case "garbage":
			c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
		}
		conns = append(conns, c)
	}
	var mu sync.Mutex
	say := func(s string) { mu.Lock(); fmt.Println(s); mu.Unlock() }
	say("connected")
	for _, c := range conns {
		go func() {
			b, _ := io.ReadAll(io.LimitReader(c, 1<<16))
			switch {
			case bytes.HasPrefix(b, []byte(wire.Magic)):
				if _, payload, err := wire.ReadFrame(bytes.NewReader(b), nil); err == nil {
					code, _, _ := wire.DecodeError(payload)
					say("code " + code)
					return
				}
			case bytes.HasPrefix(b, []byte("HTTP/")):
				if m := codeInHTTP.FindSubmatch(b); m != nil {
					say("code " + string(m[1]))
					return
				}
			}
			say("closed")
		}()
	}
	io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
	return 0
}

// flood runs helperFlood as uid and waits until want of its connections
// were refused with TOO_MANY_CONNECTIONS; the rest stay open until the
// returned stop is called.
func flood(t *testing.T, sock string, uid uint32, n, want int, mode string) (stop func()) {
	t.Helper()
	cmd := helperCmd(t, "flood", sock, strconv.Itoa(n), mode)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stop = func() { stdin.Close(); cmd.Wait() }
	sc := bufio.NewScanner(stdout)
	refused, connected := 0, false
	var other []string
	for (refused < want || !connected) && sc.Scan() {
		switch l := sc.Text(); {
		case l == "connected":
			connected = true
		case l == "code TOO_MANY_CONNECTIONS":
			refused++
		default:
			other = append(other, l)
		}
	}
	if refused != want || len(other) > 0 {
		stop()
		t.Fatalf("flood of %d from uid %d: %d refused, want %d; other answers: %q", n, uid, refused, want, other)
	}
	go io.Copy(io.Discard, stdout)
	return stop
}

// TestFloodFromOneUID: one uid opens 300 connections that send nothing
// (and another uid 40 that send half a header); each uid holds at most
// max_conns_per_uid, the rest are refused at once with
// TOO_MANY_CONNECTIONS, other uids are served all the while, and the
// audit log gets a rate-limited record, not one per connection.
func TestFloodFromOneUID(t *testing.T) {
	a := startAgentConf(t, "request_timeout = 5m\nmax_conns_per_uid = 32\nmax_conns = 1024\n", "")
	a.cli("project", "create", "p")
	for _, uid := range []uint32{a.uid("silent"), a.uid("polite"), a.uid("partial")} {
		a.register(map[string]any{"id": fmt.Sprintf("w%d", uid), "user": "u", "project": "p", "match": map[string]any{"uid": uid},
			"runtime": map[string]string{"WHO": uidName(uid)}})
	}
	stop1 := flood(t, a.workSock, a.uid("silent"), 300, 300-32, "silent")
	defer stop1()
	stop2 := flood(t, a.workSock, a.uid("partial"), 40, 40-32, "partial")
	defer stop2()
	for i := 0; i < 5; i++ {
		if env, r := a.launchEnv(a.uid("polite"), a.uid("polite")); env["WHO"] != uidName(a.uid("polite")) {
			t.Fatalf("a well-behaved uid during the flood: %s", r)
		}
	}
	if r := a.runAs(a.uid("silent"), a.uid("silent"), "", nil, bins.exec, "--", "true"); r.code != 125 || !strings.Contains(r.stderr, "TOO_MANY_CONNECTIONS") || !strings.Contains(r.stderr, "max_conns_per_uid") {
		t.Fatalf("the flooding uid's own launcher: %s", r)
	}
	b, _ := os.ReadFile(a.audit)
	records := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, `"code":"TOO_MANY_CONNECTIONS"`) && strings.Contains(l, `"uid":`+uidName(a.uid("silent"))) {
			records++
		}
	}
	if records < 1 || records > 3 {
		t.Fatalf("%d audit records for 269 refusals of uid %d; want a rate-limited few:\n%s", records, a.uid("silent"), b)
	}
	stop1()
	stop2()
	// Once the flood is gone (the agent has seen all 64 held connections
	// close) the uid is served again.
	a.waitLog("read request:", 64)
	for try := 0; ; try++ {
		env, r := a.launchEnv(a.uid("silent"), a.uid("silent"))
		if env["WHO"] == uidName(a.uid("silent")) {
			break
		}
		// The slot goes back just after the refusal is logged.
		if try > 5 || !strings.Contains(r.stderr, "TOO_MANY_CONNECTIONS") {
			t.Fatalf("after the flood: %s", r)
		}
	}
}

// TestGarbageFlood: a uid that sends hundreds of malformed requests is
// refused each time, but the audit log records a bounded number of them
// one by one and counts the rest.
func TestGarbageFlood(t *testing.T) {
	a := startAgentConf(t, "max_conns_per_uid = 1000\n", "")
	cmd := helperCmd(t, "flood", a.workSock, "400", "garbage")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: a.uid("garbage"), Gid: a.uid("garbage")}}
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	sc := bufio.NewScanner(stdout)
	answers := 0
	for answers < 400 && sc.Scan() {
		switch l := sc.Text(); l {
		case "connected":
		case "code BAD_REQUEST":
			answers++
		default:
			t.Fatalf("unexpected answer %q", l)
		}
	}
	b, _ := os.ReadFile(a.audit)
	records := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, `"code":"BAD_REQUEST"`) && strings.Contains(l, `"uid":`+uidName(a.uid("garbage"))) {
			records++
		}
	}
	// 50 at once, then 5 a second.
	if answers != 400 || records < 50 || records > 100 {
		t.Fatalf("%d answers, %d audit records of 400 refusals", answers, records)
	}
}

// TestAdminFlood: the admin socket holds max_conns_per_uid connections of
// a uid too; more get a 503 with the code, root's CLI keeps working.
func TestAdminFlood(t *testing.T) {
	a := startAgentConf(t, "max_conns_per_uid = 8\n", "")
	stop := flood(t, a.adminSock, a.uid("flooder"), 20, 12, "silent")
	defer stop()
	a.cli("project", "create", "p")
	if r := a.cliAs(a.uid("flooder"), "whoami"); r.code != 1 || !strings.Contains(r.stderr, "TOO_MANY_CONNECTIONS") {
		t.Fatalf("the flooding uid's CLI: %s", r)
	}
	if r := a.cliAs(a.uid("bystander"), "whoami"); r.code != 0 {
		t.Fatalf("another uid's CLI: %s", r)
	}
}

// adminHTTP is an HTTP client on the admin socket, for what the CLI would
// not send.
func adminHTTP(sock string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}}
}

// TestAdminBadInputMatrix sends bad input over the real admin socket: each
// request gets a clear error with its code, nothing stored changes, no
// error quotes the value it was sent, and the agent keeps serving.
func TestAdminBadInputMatrix(t *testing.T) {
	a := startAgent(t, "")
	const canary = "canary bad!input 5e0a"
	a.cli("project", "create", "p")
	a.cli("env", "set", "--user", "alice", "KEEP", "kept")
	a.register(map[string]any{"id": "w", "user": "alice", "project": "p", "match": map[string]any{"uid": a.uid("w")}})
	a.cli("project", "add-member", "p", "alice")
	stateBefore := func() string {
		return a.cli("env", "list", "--user", "alice", "--json") + a.cli("project", "env", "list", "p", "--json") + a.cli("workload", "list", "--json")
	}
	statusRev := func() string {
		var st map[string]any
		json.Unmarshal([]byte(a.cli("status", "--json")), &st)
		return fmt.Sprint(st["revision"])
	}
	before, rev := stateBefore(), statusRev()
	big := bytes.Repeat([]byte("a"), 1<<20)
	c := adminHTTP(a.adminSock)
	for _, tt := range []struct {
		name, method, path string
		body               []byte
		status             int
		code               string
	}{
		{"Oversized", "PUT", "/v1/users/alice/env/X", append(append([]byte(`{"value":"`+canary), big...), `"}`...), 400, "INVALID_REQUEST"},
		{"OversizedRegistration", "POST", "/v1/workloads", append(append([]byte(`{"id":"big","user":"u","project":"p","match":{"uid":1},"runtime":{"A":"`), big...), `"}}`...), 400, "INVALID_REQUEST"},
		{"InvalidJSON", "PUT", "/v1/users/alice/env/X", []byte(`{"value":"` + canary), 400, "INVALID_REQUEST"},
		{"NotJSON", "POST", "/v1/projects", []byte("\x00\x01\x02"), 400, "INVALID_REQUEST"},
		{"UnknownField", "PUT", "/v1/users/alice/env/X", []byte(`{"value":"` + canary + `","secert":true}`), 400, "INVALID_REQUEST"},
		{"UnknownRegistrationField", "POST", "/v1/workloads", []byte(`{"id":"w2","user":"u","project":"p","match":{"uid":1},"exectuion":{"A":"` + canary + `"}}`), 400, "INVALID_REQUEST"},
		{"WrongType", "PUT", "/v1/users/alice/env/X", []byte(`{"value":["` + canary + `"]}`), 400, "INVALID_REQUEST"},
		{"WrongTypeUID", "POST", "/v1/workloads", []byte(`{"id":"w2","user":"u","project":"p","match":{"uid":"root"}}`), 400, "INVALID_REQUEST"},
		{"HugeCount", "PUT", "/v1/projects/p/groups", []byte(`{"groups":[` + strings.Repeat(`"g",`, 200000) + `"g"]}`), 400, "INVALID_REQUEST"},
		{"HugeNumber", "POST", "/v1/workloads", []byte(`{"id":"w2","user":"u","project":"p","match":{"uid":1e400}}`), 400, "INVALID_REQUEST"},
		{"NulInValue", "PUT", "/v1/users/alice/env/X", []byte(`{"value":"a\u0000` + canary + `"}`), 400, "ENV_VAR_INVALID_VALUE"},
		{"NulInName", "PUT", "/v1/users/alice/env/A%00B", []byte(`{"value":"` + canary + `"}`), 400, "ENV_VAR_INVALID_NAME"},
		{"InvalidUTF8Name", "PUT", "/v1/users/alice/env/%FF%FE", []byte(`{"value":"` + canary + `"}`), 400, "ENV_VAR_INVALID_NAME"},
		{"InvalidUTF8User", "PUT", "/v1/users/%FF%FE/env/X", []byte(`{"value":"` + canary + `"}`), 400, "INVALID_REQUEST"},
		{"InvalidUTF8Project", "POST", "/v1/projects", []byte("{\"name\":\"p\xff\"}"), 400, "INVALID_REQUEST"},
		{"InvalidUTF8WorkloadID", "POST", "/v1/workloads", []byte("{\"id\":\"w\xff\",\"user\":\"u\",\"project\":\"p\",\"match\":{\"uid\":1}}"), 400, "INVALID_REQUEST"},
		{"TraversalID", "POST", "/v1/workloads", []byte(`{"id":"../../etc/cron.d/x","user":"u","project":"p","match":{"token":true}}`), 400, "INVALID_REQUEST"},
		{"TraversalPath", "DELETE", "/v1/workloads/..%2F..%2Fw", nil, 404, "WORKLOAD_NOT_FOUND"},
		{"TraversalUser", "GET", "/v1/users/..%2Fbob/env", nil, 400, "INVALID_REQUEST"},
		{"IssuedToken", "POST", "/v1/workloads", []byte(`{"id":"w2","user":"u","project":"p","match":{"token":true},"issued_token":"` + strings.Repeat("a", 64) + `"}`), 400, "INVALID_REQUEST"},
		{"BadMatch", "POST", "/v1/workloads", []byte(`{"id":"w2","user":"u","project":"p","match":{"cgroup":"/../x"}}`), 400, "INVALID_REQUEST"},
		{"DuplicateWorkload", "POST", "/v1/workloads", []byte(`{"id":"w","user":"u","project":"p","match":{"uid":1},"runtime":{"A":"` + canary + `"}}`), 409, "WORKLOAD_ALREADY_EXISTS"},
		{"NoSuchEndpoint", "GET", "/v1/nope", nil, 404, "NOT_FOUND"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, "http://envlet"+tt.path, bytes.NewReader(tt.body))
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var e struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			if err := json.Unmarshal(body, &e); err != nil || resp.StatusCode != tt.status || e.Error.Code != tt.code || e.Error.Message == "" {
				t.Fatalf("status %d body %.300q; want %d %s", resp.StatusCode, body, tt.status, tt.code)
			}
			if bytes.Contains(body, []byte(canary)) || len(body) > 2048 {
				t.Fatalf("the error quotes the input or is huge: %.300q", body)
			}
		})
	}
	if after := stateBefore(); after != before || statusRev() != rev {
		t.Fatalf("stored state changed:\n%s\n---\n%s", before, after)
	}
	if env, r := a.launchEnv(a.uid("w"), a.uid("w")); env["KEEP"] != "kept" {
		t.Fatalf("the agent stopped serving: %s", r)
	}
	a.stop()
	a.noCanary(canary)
}
