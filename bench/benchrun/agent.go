package main

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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/envlet/envlet/bench/internal/gen"
)

// Workload uids: workload i of a layout is matched by uid uidBase+i, so
// each registration matches exactly one caller and load clients run as
// those uids.
const uidBase = 200000

// registration is the document of docs/design.md §4, as the benchmarks write it.
type registration struct {
	ID      string            `json:"id"`
	User    string            `json:"user"`
	Project string            `json:"project"`
	Match   map[string]uint32 `json:"match"`
	Runtime map[string]string `json:"runtime,omitempty"`
	Mount   bool              `json:"mount,omitempty"`
}

func benchRegistration(i, vars int, project string) registration {
	return registration{
		ID:      fmt.Sprintf("w%05d", i),
		User:    fmt.Sprintf("u%05d", i),
		Project: project,
		Match:   map[string]uint32{"uid": uint32(uidBase + i)},
		Runtime: gen.Vars(i, vars),
	}
}

// writeWorkloads drops n registrations of vars runtime variables each into
// dir/workloads.d, the fast way to register many workloads before a start.
func writeWorkloads(dir string, n, vars int, project func(i int) string, mount bool) error {
	wd := filepath.Join(dir, "workloads.d")
	if err := os.MkdirAll(wd, 0o755); err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		reg := benchRegistration(i, vars, project(i))
		reg.Mount = mount
		b, err := json.Marshal(reg)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(wd, fmt.Sprintf("w%05d.json", i)), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// agentProc is a running `envletd -dev -dir DIR`.
type agentProc struct {
	dir    string
	cmd    *exec.Cmd
	sock   string // workload socket
	admin  string // admin socket
	ready  time.Duration
	done   chan struct{}
	client *http.Client

	// rest is /proc/PID/status (kB fields in bytes) and restStatus the
	// agent's status, read once after READY, before anything asked it for
	// anything: what holding its workloads costs.
	rest       map[string]int64
	restStatus agentStatus
}

// startAgent runs envletd -dev in dir and waits until it prints the two
// export lines, which it does once the sockets are open and every
// registration in workloads.d is loaded (READY). ready is the time from
// just before the exec to the second line.
func startAgent(envletd, dir string) (*agentProc, error) {
	return startAgentHook(envletd, dir, nil)
}

// startAgentArgs is startAgent with more arguments before -dev.
func startAgentArgs(envletd, dir string, args ...string) (*agentProc, error) {
	return startAgentFull(envletd, dir, args, nil)
}

// startAgentHook is startAgent with a hook run with the agent's pid right
// after the exec (to attach a profiler).
func startAgentHook(envletd, dir string, hook func(pid int)) (*agentProc, error) {
	return startAgentFull(envletd, dir, nil, hook)
}

func startAgentFull(envletd, dir string, args []string, hook func(pid int)) (*agentProc, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	os.Chmod(dir, 0o755)
	logf, err := os.OpenFile(filepath.Join(dir, "agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(envletd, append(args, "-dev", "-dir", dir)...)
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	if hook != nil {
		hook(cmd.Process.Pid)
	}
	a := &agentProc{dir: dir, cmd: cmd, done: make(chan struct{})}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		io.Copy(io.Discard, out)
	}()
	go func() { cmd.Wait(); close(a.done) }()
	timeout := time.After(5 * time.Minute)
	for a.sock == "" || a.admin == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				a.stop()
				return nil, fmt.Errorf("envletd exited before READY; see %s/agent.log", dir)
			}
			if v, ok := strings.CutPrefix(l, "export ENVLET_SOCKET="); ok {
				a.sock = unquote(v)
			}
			if v, ok := strings.CutPrefix(l, "export ENVLET_ADMIN_SOCKET="); ok {
				a.admin = unquote(v)
			}
		case <-timeout:
			a.stop()
			return nil, fmt.Errorf("envletd not READY after 5 minutes")
		}
	}
	a.ready = time.Since(t0)
	a.client = adminClient(a.admin)
	return a, nil
}

// adminClient is an HTTP client for the admin API on the socket admin.
func adminClient(admin string) *http.Client {
	return &http.Client{
		Timeout: 5 * time.Minute,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", admin)
			},
			MaxIdleConnsPerHost: 16,
		},
	}
}

func unquote(s string) string {
	if len(s) >= 2 && s[0] == '\'' && s[len(s)-1] == '\'' {
		return strings.ReplaceAll(s[1:len(s)-1], `'\''`, `'`)
	}
	return s
}

func (a *agentProc) pid() int { return a.cmd.Process.Pid }

// stop ends the agent with SIGTERM, then SIGKILL after 10 s.
func (a *agentProc) stop() {
	if a == nil || a.cmd.Process == nil {
		return
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		a.cmd.Process.Kill()
		<-a.done
	}
}

// call sends one admin API request as root (an admin) and decodes a JSON
// reply into out when out is not nil.
func (a *agentProc) call(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://envlet"+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		json.Unmarshal(b, &e)
		return fmt.Errorf("%s %s: %d %s: %s", method, path, resp.StatusCode, e.Error.Code, e.Error.Message)
	}
	if out != nil && len(b) > 0 {
		return json.Unmarshal(b, out)
	}
	return nil
}

type agentStatus struct {
	Revision     int64 `json:"revision"`
	Workloads    int   `json:"workloads"`
	MemoryLocked bool  `json:"memory_locked"`
	LockedBytes  int64 `json:"locked_bytes"`
}

func (a *agentProc) status() (agentStatus, error) {
	var s agentStatus
	err := a.call("GET", "/v1/status", nil, &s)
	return s, err
}

// procStatus reads the kB fields of /proc/PID/status (VmRSS, VmHWM, VmLck…)
// as bytes.
func procStatus(pid int) (map[string]int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return nil, err
	}
	m := map[string]int64{}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 2 && f[1] == "kB" {
			if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				m[k] = n << 10
			}
		}
	}
	return m, nil
}

// agent returns the agent of a named layout, starting it (and writing its
// workloads.d) the first time.
func (r *runner) agent(layout string) (*agentProc, error) {
	if a := r.agents[layout]; a != nil {
		return a, nil
	}
	dir := filepath.Join(r.work, layout)
	var n int
	var mount bool
	project := func(int) string { return "bench" }
	switch layout {
	case "empty":
	case "load1k":
		n = 1000
	case "load10k":
		n = 10000

	default:
		return nil, fmt.Errorf("unknown layout %s", layout)
	}
	if n > 0 {
		t := time.Now()
		if err := writeWorkloads(dir, n, 64, project, mount); err != nil {
			return nil, err
		}
		logf("wrote %d registrations of 64 variables in %s", n, time.Since(t).Round(time.Millisecond))
	}
	a, err := startAgent(bin(r.o.bin, "envletd"), dir)
	if err != nil {
		return nil, err
	}
	logf("agent %s READY in %s", layout, a.ready.Round(time.Millisecond))
	// A short settle, then what holding the workloads costs, before any
	// section drives the agent.
	time.Sleep(200 * time.Millisecond)
	if a.rest, err = procStatus(a.pid()); err != nil {
		a.stop()
		return nil, err
	}
	if a.restStatus, err = a.status(); err != nil {
		a.stop()
		return nil, err
	}
	r.agents[layout] = a
	return a, nil
}

func (r *runner) stopAgent(layout string) {
	if a := r.agents[layout]; a != nil {
		a.stop()
		delete(r.agents, layout)
	}
}

// startFloor runs floorserver serving frames of vars variables.
func (r *runner) startFloor(vars int) (string, error) {
	r.stopFloor()
	sock := filepath.Join(r.work, "floor.sock")
	cmd := exec.Command(bin(r.o.benchBin, "floorserver"), "-socket", sock, "-vars", strconv.Itoa(vars))
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		cmd.Process.Kill()
		cmd.Wait()
		return "", fmt.Errorf("floorserver did not start")
	}
	r.floor = cmd
	return sock, nil
}

func (r *runner) stopFloor() {
	if r.floor != nil {
		r.floor.Process.Kill()
		r.floor.Wait()
		r.floor = nil
	}
}
