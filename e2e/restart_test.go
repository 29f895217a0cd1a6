package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestRestartUnderLoad restarts the agent under load, as an operator's
// node sees it: four launchers in a loop, a writer, a reload (SIGHUP)
// every 2 s, and the agent killed with SIGKILL and started again three
// times. A GetEnv is a read, so the launcher asks again when the socket
// file is missing, nobody listens on it, or the connection is cut
// mid-reply: no launch fails, and every acknowledged write survives.
func TestRestartUnderLoad(t *testing.T) {
	a, uid := faultAgent(t)
	a.cli("project", "env", "set", "p", "MARK", "yes")
	hc := adminHTTP(a.adminSock)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var launches, failures atomic.Int64
	var failMu sync.Mutex
	var failed []string
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				cmd := exec.Command(bins.exec, "--", "/usr/bin/env")
				// ENVLET_RETRY longer than a restart takes on a loaded
				// machine; the default 2 s holds where restarts are quick.
				cmd.Env = []string{"PATH=/usr/bin:/bin", "ENVLET_SOCKET=" + a.workSock, "ENVLET_RETRY=15"}
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
				var out, errb bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &errb
				err := cmd.Run()
				launches.Add(1)
				if err != nil || !strings.Contains(out.String(), "\nMARK=yes\n") && !strings.HasPrefix(out.String(), "MARK=yes\n") {
					failures.Add(1)
					failMu.Lock()
					failed = append(failed, fmt.Sprintf("%v: %s", err, strings.TrimSpace(errb.String())))
					failMu.Unlock()
				}
			}
		})
	}
	var acked []string // W_i acknowledged with value v-i
	var ackMu sync.Mutex
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			name := fmt.Sprintf("W_%d", i)
			body := strings.NewReader(fmt.Sprintf(`{"value":"v-%d"}`, i))
			req, _ := http.NewRequest(http.MethodPut, "http://envlet/v1/projects/p/env/"+name, body)
			resp, err := hc.Do(req)
			if err != nil {
				time.Sleep(10 * time.Millisecond) // the agent is down: not acknowledged
				continue
			}
			resp.Body.Close()
			if resp.StatusCode == 200 {
				ackMu.Lock()
				acked = append(acked, name)
				ackMu.Unlock()
			}
		}
	})

	// 14 s: SIGHUP every 2 s, SIGKILL and a restart at 3, 7 and 11 s.
	var restarts []time.Duration
	for sec := 1; sec <= 14; sec++ {
		time.Sleep(time.Second)
		if sec%2 == 0 {
			a.cmd.Process.Signal(syscall.SIGHUP)
		}
		if sec%4 == 3 {
			began := time.Now()
			a.kill()
			a.start()
			restarts = append(restarts, time.Since(began))
		}
	}
	close(stop)
	wg.Wait()

	t.Logf("%d launches, %d failed; %d writes acknowledged; restarts took %v", launches.Load(), failures.Load(), len(acked), restarts)
	if failures.Load() > 0 {
		t.Fatalf("%d of %d launches failed across the restarts, e.g. %q", failures.Load(), launches.Load(), failed[:min(5, len(failed))])
	}
	got := projectEnvOf(t, a, "p")
	for _, name := range acked {
		if got[name] != "v-"+strings.TrimPrefix(name, "W_") {
			t.Fatalf("acknowledged write %s = %q after the restarts", name, got[name])
		}
	}
	if launches.Load() < 100 || len(acked) < 50 {
		t.Fatalf("too little load to say anything: %d launches, %d writes", launches.Load(), len(acked))
	}
}
