// Command flood measures how many GetEnv requests per second the agent
// still serves to well-behaved workloads while misbehaving peers hold
// connections open on the workload socket (issue 4).
//
//	go build -o bin/bench/flood ./bench/flood && sudo bin/bench/flood [-bin bin] [-duration 5s]
//
// It starts bin/envletd with the production defaults that bound peers
// (max_conns_per_uid 32, max_conns 1024, request_timeout 5s), registers one
// workload with 20 runtime variables for uid 0, and runs, for each
// scenario, -clients goroutines that send GetEnv over the raw protocol and
// read the Env frame, as fast as they can, for -duration:
//
//   - baseline: nothing else on the socket;
//   - held: 256 connections held open by 8 other uids (32 each, the cap):
//     half send nothing, half send half a frame header and stall; each is
//     reopened as soon as the agent drops it at request_timeout;
//   - held+churn: the same, plus one more uid opening connections in a
//     tight loop, every one over its cap and refused.
//
// Misbehaving peers run as child processes (this binary, re-run as other
// uids), so it needs root. It prints a table: requests/s, p50 and p99
// latency, and the ratio to the baseline.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/envlet/envlet/agent/wire"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "hold" {
		os.Exit(hold(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "churn" {
		os.Exit(churn(os.Args[2]))
	}
	bin := flag.String("bin", "bin", "directory with envletd")
	dur := flag.Duration("duration", 5*time.Second, "measured time per scenario")
	clients := flag.Int("clients", 4, "well-behaved client goroutines (under max_conns_per_uid)")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "flood: needs root (misbehaving peers run as other uids)")
		os.Exit(2)
	}
	if err := run(*bin, *dur, *clients); err != nil {
		fmt.Fprintln(os.Stderr, "flood:", err)
		os.Exit(1)
	}
}

type result struct {
	name     string
	requests int64
	errors   int64
	rps      float64
	p50, p99 time.Duration
}

func run(bin string, dur time.Duration, clients int) error {
	dir, err := os.MkdirTemp("", "elflood")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	self, err := publicCopy(dir)
	if err != nil {
		return err
	}
	ws, as := filepath.Join(dir, "w.sock"), filepath.Join(dir, "a.sock")
	conf := fmt.Sprintf("state_dir = %s/state\nkey_file = %s/keyring\nworkload_socket = %s\nadmin_socket = %s\ncredentials_socket = %s/c.sock\nworkloads_dir = %s/workloads.d\nmount_dir = %s/mounts\naudit_log = %s/audit.log\ntoken_dir = %s/tokens\nlog_level = info\n[defaults]\nPATH = /usr/bin:/bin\n",
		dir, dir, ws, as, dir, dir, dir, dir, dir)
	if err := os.WriteFile(filepath.Join(dir, "envletd.conf"), []byte(conf), 0o644); err != nil {
		return err
	}
	agent := exec.Command(filepath.Join(bin, "envletd"), "-config", filepath.Join(dir, "envletd.conf"))
	logs := &lineWaiter{want: "serving", ch: make(chan struct{})}
	agent.Stderr, agent.Stdout = logs, io.Discard
	if err := agent.Start(); err != nil {
		return err
	}
	defer func() { agent.Process.Signal(syscall.SIGTERM); agent.Wait() }()
	select {
	case <-logs.ch:
	case <-time.After(30 * time.Second):
		return fmt.Errorf("the agent did not start")
	}
	admin := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", as)
	}}}
	post := func(path string, body any) error {
		b, _ := json.Marshal(body)
		resp, err := admin.Post("http://envlet"+path, "application/json", bytes.NewReader(b))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode >= 300 {
			msg, _ := io.ReadAll(resp.Body)
			return fmt.Errorf("POST %s: %s", path, msg)
		}
		return nil
	}
	rt := map[string]string{}
	for i := 0; i < 20; i++ {
		rt[fmt.Sprintf("V%d", i)] = fmt.Sprintf("value-%d", i)
	}
	if err := post("/v1/projects", map[string]string{"name": "bench"}); err != nil {
		return err
	}
	if err := post("/v1/workloads", map[string]any{"id": "bench", "user": "root", "project": "bench", "match": map[string]any{"uid": 0}, "runtime": rt}); err != nil {
		return err
	}

	var results []result
	measure := func(name string) {
		results = append(results, load(ws, name, dur, clients))
	}
	measure("baseline")
	var holders []*exec.Cmd
	for i := 0; i < 8; i++ {
		mode := "silent"
		if i%2 == 1 {
			mode = "partial"
		}
		cmd, err := startAs(self, uint32(5100+i), "hold", ws, "32", mode)
		if err != nil {
			return err
		}
		holders = append(holders, cmd)
	}
	defer func() {
		for _, h := range holders {
			h.Process.Kill()
			h.Wait()
		}
	}()
	measure("held: 256 open (8 uids x 32)")
	ch, err := startAs(self, 5200, "churn", ws)
	if err != nil {
		return err
	}
	holders = append(holders, ch)
	measure("held + 1 uid churning refused connections")

	fmt.Printf("\nGetEnv served to %d well-behaved clients (uid 0) while misbehaving peers hold connections\n", clients)
	fmt.Printf("(%s per row; agent: max_conns_per_uid 32, max_conns 1024, request_timeout 5s)\n\n", dur)
	fmt.Printf("| scenario | requests/s | p50 | p99 | errors | vs baseline |\n|---|---|---|---|---|---|\n")
	for _, r := range results {
		fmt.Printf("| %s | %.0f | %s | %s | %d | %.2f |\n", r.name, r.rps, r.p50, r.p99, r.errors, r.rps/results[0].rps)
	}
	return nil
}

// load runs the well-behaved clients for dur.
func load(sock, name string, dur time.Duration, clients int) result {
	var n, errs atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	stop := time.Now().Add(dur)
	var wg sync.WaitGroup
	req := wire.AppendRequest(nil, wire.Request{Type: wire.TypeGetEnv})
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			buf := make([]byte, 64<<10)
			for time.Now().Before(stop) {
				t0 := time.Now()
				c, err := net.Dial("unix", sock)
				if err != nil {
					noteErr(err)
					errs.Add(1)
					continue
				}
				c.Write(req)
				typ, payload, err := wire.ReadFrame(c, buf)
				c.Close()
				if err == nil && typ != wire.TypeEnv {
					code, msg, _ := wire.DecodeError(payload)
					err = fmt.Errorf("%s: %s", code, msg)
				}
				if err != nil {
					noteErr(err)
					errs.Add(1)
					continue
				}
				mine = append(mine, time.Since(t0))
				n.Add(1)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	r := result{name: name, requests: n.Load(), errors: errs.Load(), rps: float64(n.Load()) / dur.Seconds()}
	if len(lat) > 0 {
		r.p50, r.p99 = lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)*99/100].Round(time.Microsecond)
	}
	return r
}

var errSeen sync.Map

// noteErr prints each kind of client error once, so a reader knows what
// the errors column counts.
func noteErr(err error) {
	k := err.Error()
	if i := strings.Index(k, ": "); i > 0 && strings.HasPrefix(k, "dial") {
		k = k[strings.LastIndex(k, ": ")+2:]
	}
	if _, loaded := errSeen.LoadOrStore(k, true); !loaded {
		fmt.Fprintln(os.Stderr, "client error:", err)
	}
}

// startAs runs this binary as uid with args and waits for its "ready".
func startAs(self string, uid uint32, args ...string) (*exec.Cmd, error) {
	cmd := exec.Command(self, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("helper %v as uid %d: %q %v", args, uid, line, err)
	}
	go io.Copy(io.Discard, out)
	return cmd, nil
}

// hold keeps n connections open on sock; each is reopened when the agent
// drops it. mode silent sends nothing, partial half a frame header.
func hold(args []string) int {
	sock, mode := args[0], args[2]
	n, _ := strconv.Atoi(args[1])
	var ready sync.WaitGroup
	ready.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			first := true
			for {
				c, err := net.Dial("unix", sock)
				if err == nil {
					if mode == "partial" {
						c.Write([]byte("ENVL\x01"))
					}
				}
				if first {
					first = false
					ready.Done()
				}
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				io.Copy(io.Discard, c) // until the agent drops it
				c.Close()
			}
		}()
	}
	ready.Wait()
	fmt.Println("ready")
	select {}
}

// churn opens connections as fast as it can, holding up to its cap; the
// rest are refused at once.
func churn(sock string) int {
	fmt.Println("ready")
	for i := 0; i < 2; i++ {
		go func() {
			for {
				c, err := net.Dial("unix", sock)
				if err != nil {
					continue
				}
				go func() { io.Copy(io.Discard, c); c.Close() }()
			}
		}()
	}
	select {}
}

// publicCopy copies this binary where other uids can run it.
func publicCopy(dir string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(self)
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "flood")
	return p, os.WriteFile(p, b, 0o755)
}

// lineWaiter closes ch once a written line contains want.
type lineWaiter struct {
	want string
	ch   chan struct{}
	once sync.Once
	buf  bytes.Buffer
}

func (l *lineWaiter) Write(p []byte) (int, error) {
	l.buf.Write(p)
	if strings.Contains(l.buf.String(), l.want) {
		l.once.Do(func() { close(l.ch) })
		l.buf.Reset()
	}
	return len(p), nil
}
