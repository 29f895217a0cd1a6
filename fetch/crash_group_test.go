package fetch

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

const (
	groupWriters = 32
	// groupCrashLimit bounds the commits of a child that never sees a group
	// of two or more (it then fails rather than run forever).
	groupCrashLimit = 20000
)

// groupCrashPoints are where TestCrashGroup's child kills itself, always
// while a group of two or more Commits is being written: after the
// group's records are written but before the fdatasync; with the group's
// bytes cut short at a random length (a power loss in mid-write, which may
// cut any of the group's records); after the fdatasync but before any of
// the group is acknowledged.
var groupCrashPoints = []string{"append-written", crashTorn, "append-synced"}

// TestCrashGroupHelper is the child of TestCrashGroup: groupWriters
// goroutines commit at once, each its own keys, printing each key and its
// revision after its Commit returned, until the child kills itself at the
// crash point in the middle of writing a group.
func TestCrashGroupHelper(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" || os.Getenv(crashPointEnv) == "" {
		t.Skip("run by TestCrashGroup")
	}
	round := mustAtoi(os.Getenv(crashRoundEnv))
	point := os.Getenv(crashPointEnv)
	fail := func(args ...any) {
		fmt.Println(append([]any{"ERR"}, args...)...)
		os.Exit(1)
	}
	keys, err := LoadKeyring(filepath.Join(dir, "key"), false)
	if err != nil {
		fail(err)
	}
	l, err := OpenLocal(filepath.Join(dir, "store"), keys)
	if err != nil {
		fail(err)
	}
	var outMu sync.Mutex
	w := bufio.NewWriter(os.Stdout)
	die := func(at string, group int) {
		outMu.Lock()
		fmt.Fprintf(w, "AT %s %d\n", at, group)
		w.Flush()
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // not reached
	}
	// Let a random number of groups through first, so acknowledged writes
	// pile up across rounds and compactions happen between kills.
	skip := rand.IntN(40)
	l.compactMin = 16 << 10
	l.hook = func(p string) {
		// Called with sem held, so l.logSize and l.groupLen are stable.
		if l.groupLen < 2 {
			return
		}
		if p == "append-synced" && skip > 0 {
			skip--
			return
		}
		if skip > 0 {
			return
		}
		switch {
		case point == crashTorn && p == "append-written":
			path := filepath.Join(dir, "store", logFileName)
			fi, err := os.Stat(path)
			if err != nil || fi.Size() < l.logSize+2 {
				fail("torn: log size", err)
			}
			cut := l.logSize + 1 + rand.Int64N(fi.Size()-l.logSize-1)
			if err := os.Truncate(path, cut); err != nil {
				fail(err)
			}
			die(crashTorn, l.groupLen)
		case p == point:
			die(p, l.groupLen)
		}
	}
	var wg sync.WaitGroup
	for g := range groupWriters {
		wg.Go(func() {
			for i := 0; i < groupCrashLimit/groupWriters; i++ {
				key := fmt.Sprintf("g%02d/w%02d/%05d", round, g, i)
				ops := []Op{{Key: key, Value: keys.Seal(nil, []byte("value of "+key), key)}}
				if i%4 == 0 {
					// Records of different sizes, so a torn cut lands anywhere.
					ops = append(ops, Op{Key: fmt.Sprintf("pad/w%02d", g), Value: make([]byte, (i%5)*900)})
				}
				rev, err := l.Commit(context.Background(), Txn{Ops: ops})
				if err != nil {
					fail(err)
				}
				outMu.Lock()
				fmt.Fprintf(w, "%s %d\n", key, rev)
				w.Flush()
				outMu.Unlock()
			}
		})
	}
	wg.Wait()
	fail("no group of two or more commits in", groupCrashLimit)
}

// TestCrashGroup kills a child whose writers commit at once, in the middle
// of writing a group of their Commits (before the fdatasync, with the
// group's bytes cut short, after the fdatasync), and checks after each kill
// that the store opens, that every write it acknowledged is there with its
// revision and value, and that no torn record is left in the log: the open
// cut it off, so every byte of the log is a whole, authentic record.
func TestCrashGroup(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	dir := t.TempDir()
	keys, err := LoadKeyring(filepath.Join(dir, "key"), true)
	if err != nil {
		t.Fatal(err)
	}
	acked := map[string]Revision{}
	rounds := 3 * len(groupCrashPoints)
	for round := range rounds {
		point := groupCrashPoints[round%len(groupCrashPoints)]
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashGroupHelper$")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashRoundEnv+"="+strconv.Itoa(round), crashPointEnv+"="+point)
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		stopped, group := "", 0
		for sc.Scan() {
			line := sc.Text()
			if at, ok := strings.CutPrefix(line, "AT "); ok {
				at, n, _ := strings.Cut(at, " ")
				stopped, group = at, mustAtoi(n)
				continue
			}
			key, revStr, ok := strings.Cut(line, " ")
			rev, err := strconv.ParseInt(revStr, 10, 64)
			if !ok || err != nil {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("round %d: child said %q", round, line)
			}
			acked[key] = Revision(rev)
		}
		err = cmd.Wait()
		if stopped != point || group < 2 {
			t.Fatalf("round %d: child ended (%v) at %q with a group of %d, want %s with two or more", round, err, stopped, group, point)
		}
		l, err := OpenLocal(filepath.Join(dir, "store"), keys)
		if err != nil {
			t.Fatalf("round %d (%s): reopen after kill: %v", round, point, err)
		}
		if r := l.Recovery(); point == crashTorn && r.TornBytes == 0 {
			t.Fatalf("round %d: a torn group was not noticed: %+v", round, r)
		}
		snap, err := l.Snapshot(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]KV{}
		for _, kv := range snap.KVs {
			have[kv.Key] = kv
		}
		for key, rev := range acked {
			kv, ok := have[key]
			if !ok {
				t.Fatalf("round %d (%s): acknowledged %s lost", round, point, key)
			}
			if kv.ModRev != rev {
				t.Fatalf("round %d (%s): %s at ModRev %d, acknowledged %d", round, point, key, kv.ModRev, rev)
			}
			if got, err := keys.Open(nil, kv.Value, key); err != nil || string(got) != "value of "+key {
				t.Fatalf("round %d (%s): %s does not open: %v", round, point, key, err)
			}
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if data, err := os.ReadFile(filepath.Join(dir, "store", logFileName)); err == nil {
			if _, good, err := scanLog(keys, data); err != nil || good != len(data) {
				t.Fatalf("round %d (%s): log after reopen: %d of %d bytes good, %v", round, point, good, len(data), err)
			}
		}
		t.Logf("round %d: killed at %s in a group of %d; %d acknowledged so far, store at revision %d", round, point, group, len(acked), snap.Rev)
	}
}
