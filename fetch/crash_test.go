package fetch

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

const (
	crashDirEnv   = "ENVLET_FETCH_CRASH_DIR"
	crashRoundEnv = "ENVLET_FETCH_CRASH_ROUND"
	crashPointEnv = "ENVLET_FETCH_CRASH_POINT"
	// crashTorn is the crash point that cuts the record being appended
	// short, at a random length, before the kill: a crash in the middle of
	// the write, as a machine that loses power leaves it.
	crashTorn = "torn-append"
)

// crashPoints are the steps of a write where TestCrash kills the child:
// every step of an append and of a compaction (Local.at).
var crashPoints = []string{
	"append-written", "append-synced", crashTorn,
	"compact-start", "compact-state-written", "compact-state-renamed", "compact-state-durable",
	"compact-log-written", "compact-log-renamed", "compact-done",
}

// TestCrashHelper is the child of TestCrash: it opens the store and commits
// in a loop, printing each key after its Commit returned, until it is killed.
// Each commit also moves a counter with a compare-and-swap on its ModRev, so
// the parent can check that revisions survive too. The log is compacted
// every few commits (past 4 KiB or the state file's size). With a crash
// point, the child prints "AT point" when a write reaches that step and
// kills itself there with SIGKILL.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("run by TestCrash")
	}
	round := os.Getenv(crashRoundEnv)
	point := os.Getenv(crashPointEnv)
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
	l.compactMin = 4096
	w := bufio.NewWriter(os.Stdout)
	die := func(at string) {
		fmt.Fprintf(w, "AT %s\n", at)
		w.Flush()
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // not reached
	}
	l.hook = func(p string) {
		switch {
		case point == crashTorn && p == "append-written":
			// Keep a random part of the record just written.
			path := filepath.Join(dir, "store", logFileName)
			fi, err := os.Stat(path)
			if err != nil || fi.Size() < l.logSize+2 {
				fmt.Println("ERR torn: log size", err)
				os.Exit(1)
			}
			cut := l.logSize + 1 + rand.Int64N(fi.Size()-l.logSize-1)
			if err := os.Truncate(path, cut); err != nil {
				fmt.Println("ERR", err)
				os.Exit(1)
			}
			die(crashTorn)
		case p == point:
			die(p)
		}
	}
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
		// Vary the size of the records between commits, so kills land on
		// writes of different lengths; and delete now and then, so
		// replays delete too.
		if i%3 == 0 {
			ops = append(ops, Op{Key: "pad", Value: make([]byte, (i%7)*3000)})
		}
		if i%5 == 4 {
			ops = append(ops, Op{Key: "pad", Delete: true}, Op{Key: "gone/" + key, Value: []byte("x")})
			ops = slices.DeleteFunc(ops, func(op Op) bool { return op.Key == "pad" && !op.Delete })
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

// TestCrash kills a committing child with SIGKILL, at random points and at
// every step of an append and of a compaction (and once mid-append with the
// record cut short), and checks that every write it acknowledged survives,
// that revisions never go back, and that the store always opens.
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
	hit := map[string]int{}
	var lastRev Revision
	compactions := 0
	rounds := 4 * len(crashPoints)
	for round := range rounds {
		// One round in four is a kill from outside after a random number
		// of acknowledgements (early ones land during the child's start or
		// first write); the others stop at each crash point in turn.
		point := ""
		if round%4 != 0 {
			point = crashPoints[(round/4*3+round%4-1)%len(crashPoints)]
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashRoundEnv+"="+strconv.Itoa(round), crashPointEnv+"="+point)
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		want := rand.IntN(40)
		if point != "" {
			want = -1 // until the child kills itself
		}
		sc := bufio.NewScanner(stdout)
		n, stopped := 0, ""
		for (want < 0 || n < want) && sc.Scan() {
			line := sc.Text()
			if at, ok := strings.CutPrefix(line, "AT "); ok {
				stopped = at
				continue
			}
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
		if point == "" {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
		err = cmd.Wait()
		switch {
		case point == "" && n < want:
			t.Fatalf("round %d: child ended after %d acknowledgements: %v", round, n, err)
		case point != "" && stopped != point:
			t.Fatalf("round %d: child ended (%v) without reaching %s", round, err, point)
		}
		hit[stopped]++
		// A write may have completed after the last line we read: the
		// store may be ahead of lastRev, never behind.
		l, err := OpenLocal(filepath.Join(dir, "store"), keys)
		if err != nil {
			t.Fatalf("round %d (%s): reopen after kill: %v", round, point, err)
		}
		if r := l.Recovery(); point == crashTorn && r.TornBytes == 0 {
			t.Fatalf("round %d: a torn append was not noticed: %+v", round, r)
		}
		snap, err := l.Snapshot(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if snap.Rev < lastRev {
			t.Fatalf("round %d (%s): store at revision %d, acknowledged %d", round, point, snap.Rev, lastRev)
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
		lastRev = snap.Rev
		entries, _ := os.ReadDir(filepath.Join(dir, "store"))
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), stateTempPfx) || strings.HasPrefix(e.Name(), logTempPfx) {
				t.Fatalf("round %d: temp file %s left after open", round, e.Name())
			}
		}
		if l.stateSize > 0 {
			compactions++
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range crashPoints {
		if hit[p] == 0 {
			t.Errorf("no kill landed at %s", p)
		}
	}
	if compactions == 0 {
		t.Error("the children never compacted the log")
	}
	t.Logf("%d rounds, %d acknowledged writes, final revision %d, kills at %v", rounds, len(acked), lastRev, hit)
}
