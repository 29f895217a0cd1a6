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
	"syscall"
	"testing"
)

const (
	crashDirEnv   = "ENVLET_FETCH_CRASH_DIR"
	crashRoundEnv = "ENVLET_FETCH_CRASH_ROUND"
)

// TestCrashHelper is the child of TestCrash: it opens the store and commits
// in a loop, printing each key after its Commit returned, until it is killed.
// Each commit also moves a counter with a compare-and-swap on its ModRev, so
// the parent can check that revisions survive too.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("run by TestCrash")
	}
	round := os.Getenv(crashRoundEnv)
	ctx := context.Background()
	keys, err := LoadKeyring(filepath.Join(dir, "key"), false)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	l, err := OpenLocal(filepath.Join(dir, "store"), keys)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	w := bufio.NewWriter(os.Stdout)
	for i := 0; ; i++ {
		snap, err := l.Snapshot(ctx)
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		var counter Revision
		for _, kv := range snap.KVs {
			if kv.Key == "counter" {
				counter = kv.ModRev
			}
		}
		key := fmt.Sprintf("r%02d/%06d", mustAtoi(round), i)
		ops := []Op{
			{Key: key, Value: keys.Seal(nil, []byte("value of "+key), key)},
			{Key: "counter", Value: keys.Seal(nil, []byte(key), "counter")},
		}
		// Vary the size of the file between commits, so kills land on
		// writes of different lengths.
		if i%3 == 0 {
			ops = append(ops, Op{Key: "pad", Value: make([]byte, (i%7)*3000)})
		}
		rev, err := l.Commit(ctx, Txn{Conds: []Cond{{Key: "counter", ModRev: counter}}, Ops: ops})
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		fmt.Fprintf(w, "%s %d\n", key, rev)
		w.Flush()
	}
}

func mustAtoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// TestCrash kills a committing child with SIGKILL at random points and checks
// that every write it acknowledged survives, and the store always loads.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	dir := t.TempDir()
	keys, err := LoadKeyring(filepath.Join(dir, "key"), true)
	if err != nil {
		t.Fatal(err)
	}
	acked := map[string]Revision{}
	var lastRev Revision
	const rounds = 30
	for round := range rounds {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashRoundEnv+"="+strconv.Itoa(round))
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill after a random number of acknowledgements: early ones land
		// during the child's start or first write.
		want := rand.IntN(40)
		sc := bufio.NewScanner(stdout)
		n := 0
		for n < want && sc.Scan() {
			line := sc.Text()
			key, revStr, ok := strings.Cut(line, " ")
			rev, err := strconv.ParseInt(revStr, 10, 64)
			if !ok || err != nil {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("round %d: child said %q", round, line)
			}
			if Revision(rev) <= lastRev {
				t.Fatalf("round %d: revision %d after %d", round, rev, lastRev)
			}
			lastRev = Revision(rev)
			acked[key] = Revision(rev)
			n++
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		err = cmd.Wait()
		if n < want {
			t.Fatalf("round %d: child ended after %d acknowledgements: %v", round, n, err)
		}
		// A write may have completed after the last line we read: the
		// store may be ahead of lastRev, never behind.
		l, err := OpenLocal(filepath.Join(dir, "store"), keys)
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		snap, err := l.Snapshot(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if snap.Rev < lastRev {
			t.Fatalf("round %d: store at revision %d, acknowledged %d", round, snap.Rev, lastRev)
		}
		have := map[string]KV{}
		for _, kv := range snap.KVs {
			have[kv.Key] = kv
		}
		for key, rev := range acked {
			kv, ok := have[key]
			if !ok {
				t.Fatalf("round %d: acknowledged %s lost", round, key)
			}
			if kv.ModRev != rev {
				t.Fatalf("round %d: %s at ModRev %d, acknowledged %d", round, key, kv.ModRev, rev)
			}
			if got, err := keys.Open(nil, kv.Value, key); err != nil || string(got) != "value of "+key {
				t.Fatalf("round %d: %s does not open: %v", round, key, err)
			}
		}
		lastRev = snap.Rev
		entries, _ := os.ReadDir(filepath.Join(dir, "store"))
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), stateTempPfx) {
				t.Fatalf("round %d: temp file %s left after open", round, e.Name())
			}
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d rounds, %d acknowledged writes, final revision %d", rounds, len(acked), lastRev)
}
