package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestCrashDuringWrites kills the agent with SIGKILL at random points while
// four writers send thousands of writes over the admin socket, restarts it,
// and checks that the state loads and holds every acknowledged write: each
// new key with its value, and each overwritten key at its last
// acknowledged value or the one in flight when the agent died.
func TestCrashDuringWrites(t *testing.T) {
	// Thousands of variables in one project: over the default
	// project_var_limit (500), which is not what this test is about.
	a := startAgentConf(t, "project_var_limit = 1000000\nscope_bytes_limit = 1073741824", "")
	a.cli("project", "create", "crash")
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	t.Logf("seed %d", seed)

	const writers = 4
	acked := map[string]string{}            // key -> value acknowledged last
	pending := map[string]map[string]bool{} // key -> values sent but not acknowledged
	var mu sync.Mutex
	total, rounds := 0, 0
	deadline := time.Now().Add(40 * time.Second)
	for total < 3000 && time.Now().Before(deadline) {
		rounds++
		c := adminHTTP(a.adminSock)
		killAt := int64(50 + rng.IntN(500)) // acknowledged writes in this round before the kill
		var done atomic.Int64
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					// Every third write overwrites a hot key; the rest add new keys.
					key := fmt.Sprintf("K_%d_%d_%d", rounds, w, i)
					if i%3 == 0 {
						key = fmt.Sprintf("HOT_%d", w)
					}
					val := fmt.Sprintf("v-%d-%d-%d", rounds, w, i)
					mu.Lock()
					if pending[key] == nil {
						pending[key] = map[string]bool{}
					}
					pending[key][val] = true
					mu.Unlock()
					body, _ := json.Marshal(map[string]string{"value": val})
					req, _ := http.NewRequest("PUT", "http://envlet/v1/projects/crash/env/"+key, bytes.NewReader(body))
					resp, err := c.Do(req)
					if err != nil {
						return // the agent is gone
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						t.Errorf("write %s: status %d", key, resp.StatusCode)
						return
					}
					mu.Lock()
					acked[key] = val
					pending[key] = map[string]bool{}
					mu.Unlock()
					done.Add(1)
				}
			}()
		}
		// Kill once the round's count is reached, a random few
		// microseconds in, so the kill lands anywhere in a write.
		for done.Load() < killAt {
			time.Sleep(200 * time.Microsecond)
		}
		time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
		a.kill()
		close(stop)
		wg.Wait()
		total += int(done.Load())

		a.start() // fails the test if the state does not load
		got := projectEnvOf(t, a, "crash")
		mu.Lock()
		for k, v := range acked {
			if got[k] != v && !pending[k][got[k]] {
				t.Fatalf("round %d: %s = %q after kill -9, acknowledged %q", rounds, k, got[k], v)
			}
			// What the store holds now is the acknowledged state.
			acked[k] = got[k]
			pending[k] = map[string]bool{}
		}
		mu.Unlock()
	}
	t.Logf("%d acknowledged writes over %d kill -9 and restart rounds, all present", total, rounds)
	if total < 500 {
		t.Fatalf("only %d writes in the time allowed", total)
	}
}
