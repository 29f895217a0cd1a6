package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/envlet/envlet/cache"
	"github.com/envlet/envlet/fetch"
)

func testMounter(t *testing.T) *mounter {
	t.Helper()
	dir, err := os.MkdirTemp("", "elm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m := newMounter(dir, hclog.NewNullLogger(), cache.NewPool())
		m.reclaim(dir)
	})
	return newMounter(filepath.Join(dir, "mounts"), hclog.NewNullLogger(), cache.NewPool())
}

// job builds a mount job the way updateMount does: values in one locked
// buffer, names sorted.
func job(m *mounter, id string, rev int64, o mountOwner, vars, secrets map[string]string) *mountJob {
	size := 0
	for _, v := range vars {
		size += len(v)
	}
	for _, v := range secrets {
		size += len(v)
	}
	j := &mountJob{id: id, rev: fetch.Revision(rev), owner: o, buf: m.pool.Alloc(size)}
	buf := j.buf.Bytes()[:0]
	add := func(list *[]mountVar, m map[string]string) {
		names := make([]string, 0, len(m))
		for n := range m {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			buf = append(buf, m[n]...)
			*list = append(*list, mountVar{n, buf[len(buf)-len(m[n]):]})
		}
	}
	add(&j.vars, vars)
	add(&j.secrets, secrets)
	return j
}

func owner(uid, gid int) mountOwner { return mountOwner{uid, gid, 0o500, 0o400} }

func TestMountWrite(t *testing.T) {
	m := testMounter(t)
	// A strict umask (systemd's UMask=0077) must not lock workloads out.
	defer syscall.Umask(syscall.Umask(0o077))
	o := owner(4242, 4343)
	m.do(job(m, "train-42", 7, o,
		map[string]string{"A": "1", "MULTI": "x\ny", "BAD": "\xff"},
		map[string]string{"TOKEN": "s3cr3t", "CERT": "-----BEGIN-----\n\x00\x01binary\n"}))

	link := filepath.Join(m.dir, "train-42")
	target, err := os.Readlink(link)
	if err != nil || target != ".train-42/7" {
		t.Fatalf("link: %q, %v; want .train-42/7", target, err)
	}
	want := map[string]string{
		"env":                "# written by envletd for workload train-42 at revision 7; do not edit\nA=\"1\"\nMULTI=\"x\ny\"\n",
		"docker.env":         "# written by envletd for workload train-42 at revision 7; do not edit\nA=1\n",
		"docker.env.skipped": "BAD\nMULTI\n",
		"env.skipped":        "BAD\n",
		"env.json":           "{\n  \"A\": \"1\",\n  \"MULTI\": \"x\\ny\"\n}\n",
		"env.json.skipped":   "BAD\n",
		"secrets/TOKEN":      "s3cr3t",
		"secrets/CERT":       "-----BEGIN-----\n\x00\x01binary\n",
	}
	for name, content := range want {
		p := filepath.Join(link, name)
		b, err := os.ReadFile(p)
		if err != nil || string(b) != content {
			t.Errorf("%s: %q, %v; want %q", name, b, err, content)
		}
	}
	var files []string
	filepath.Walk(filepath.Join(m.dir, target), func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		wantMode := os.FileMode(0o400)
		if fi.IsDir() {
			wantMode = 0o500 | os.ModeDir
		} else {
			rel, _ := filepath.Rel(filepath.Join(m.dir, target), p)
			files = append(files, rel)
		}
		if fi.Mode() != wantMode {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), wantMode)
		}
		if m.chown && (st.Uid != 4242 || st.Gid != 4343) {
			t.Errorf("%s: owned by %d:%d, want 4242:4343", p, st.Uid, st.Gid)
		}
		return nil
	})
	if len(files) != len(want) {
		t.Errorf("files %v, want exactly %d", files, len(want))
	}
	for p, mode := range map[string]os.FileMode{m.dir: 0o755, filepath.Join(m.dir, ".train-42"): 0o711} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v, %v; want %v", p, fi.Mode(), err, mode)
		}
	}

	// A second version replaces the first; the first is gone.
	m.do(job(m, "train-42", 9, o, map[string]string{"A": "2"}, nil))
	if target, _ := os.Readlink(link); target != ".train-42/9" {
		t.Fatalf("link after update: %q", target)
	}
	entries, _ := os.ReadDir(filepath.Join(m.dir, ".train-42"))
	if len(entries) != 1 || entries[0].Name() != "9" {
		t.Errorf("versions left: %v", entries)
	}
	if _, err := os.Stat(filepath.Join(link, "env.skipped")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("env.skipped of the old version is still there: %v", err)
	}
	// The same revision again gets its own directory.
	m.do(job(m, "train-42", 9, o, map[string]string{"A": "3"}, nil))
	if target, _ := os.Readlink(link); target != ".train-42/9-2" {
		t.Fatalf("link after a rewrite at the same revision: %q", target)
	}

	m.do(&mountJob{id: "train-42", remove: true})
	for _, p := range []string{link, filepath.Join(m.dir, ".train-42")} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after removal: %v", p, err)
		}
	}
}

func TestMountOwners(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files away")
	}
	uid, gid := uint32(1500), uint32(1600)
	for _, tt := range []struct {
		name              string
		match             Match
		uid, gid          uint32
		dirMode, fileMode os.FileMode
	}{
		{"UID", Match{UID: &uid}, 1500, 0, 0o500, 0o400},
		{"UIDAndGID", Match{UID: &uid, GID: &gid}, 1500, 1600, 0o500, 0o400},
		{"GIDOnly", Match{GID: &gid}, 0, 1600, 0o550, 0o440},
		{"Neither", Match{SystemdUnit: "x.service"}, 0, 0, 0o500, 0o400},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := testMounter(t)
			m.do(job(m, "w", 1, ownerOf(tt.match), map[string]string{"A": "1"}, nil))
			for p, mode := range map[string]os.FileMode{"w": tt.dirMode | os.ModeDir, "w/env": tt.fileMode} {
				fi, err := os.Stat(filepath.Join(m.dir, p))
				if err != nil {
					t.Fatal(err)
				}
				st := fi.Sys().(*syscall.Stat_t)
				if fi.Mode() != mode || st.Uid != tt.uid || st.Gid != tt.gid {
					t.Errorf("%s: %v %d:%d, want %v %d:%d", p, fi.Mode(), st.Uid, st.Gid, mode, tt.uid, tt.gid)
				}
			}
		})
	}
}

// TestMountSwapAtomic: readers that open the mount while versions are
// swapped in never see a mix of two versions, nor a partial file.
func TestMountSwapAtomic(t *testing.T) {
	m := testMounter(t)
	o := owner(4242, 4242)
	version := func(i int) *mountJob {
		v := strconv.Itoa(i)
		return job(m, "w", int64(i), o, map[string]string{"A": v, "B": v, "LONG": v + strings.Repeat("x", 20000)}, map[string]string{"S": v})
	}
	m.do(version(1))
	link := filepath.Join(m.dir, "w")
	var stop atomic.Bool
	var consistent, retried atomic.Int64
	var wg sync.WaitGroup
	for r := 0; r < 3; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := 0
			for !stop.Load() {
				got, err := readVersion(link)
				if errors.Is(err, os.ErrNotExist) {
					retried.Add(1) // the version went away under us: start again
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				if got < last {
					t.Errorf("version went back from %d to %d", last, got)
				}
				last = got
				consistent.Add(1)
			}
		}()
	}
	for i := 2; i <= 300; i++ {
		m.do(version(i))
	}
	stop.Store(true)
	wg.Wait()
	if consistent.Load() == 0 {
		t.Fatal("no read completed")
	}
	t.Logf("%d consistent reads, %d restarted", consistent.Load(), retried.Load())
}

// readVersion opens the mount once and reads every file through that
// directory, as a careful reader does, and returns the one version all of
// them hold; an error if any file is partial or they disagree.
func readVersion(link string) (int, error) {
	fd, err := unix.Open(link, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return 0, os.ErrNotExist
	}
	defer unix.Close(fd)
	read := func(name string) ([]byte, error) {
		f, err := unix.Openat(fd, name, unix.O_RDONLY, 0)
		if err != nil {
			return nil, os.ErrNotExist
		}
		file := os.NewFile(uintptr(f), name)
		defer file.Close()
		var b []byte
		buf := make([]byte, 4096)
		for {
			n, err := file.Read(buf)
			b = append(b, buf[:n]...)
			if n == 0 || err != nil {
				return b, nil
			}
		}
	}
	seen := map[string]bool{}
	note := func(v string) { seen[v] = true }
	b, err := read("env")
	if err != nil {
		return 0, err
	}
	env, err := parseSystemdEnv(b)
	if err != nil {
		return 0, err
	}
	note(env["A"])
	note(env["B"])
	if b, err = read("docker.env"); err != nil {
		return 0, err
	}
	docker, err := parseDockerEnv(b)
	if err != nil {
		return 0, err
	}
	note(docker["A"])
	if b, err = read("env.json"); err != nil {
		return 0, err
	}
	var js map[string]string
	if err := json.Unmarshal(b, &js); err != nil {
		return 0, errors.New("env.json is not whole: " + err.Error())
	}
	note(js["B"])
	if len(js["LONG"]) != len(env["LONG"]) {
		return 0, errors.New("LONG differs between env and env.json")
	}
	if b, err = read("secrets/S"); err != nil {
		return 0, err
	}
	note(string(b))
	if len(seen) != 1 {
		return 0, errors.New("a mix of versions: " + strconv.Itoa(len(seen)) + " different values")
	}
	for v := range seen {
		return strconv.Atoi(v)
	}
	return 0, nil
}

// TestMountReclaimLinks: a workload owns its version directory and could
// put links in it; removing the version must not follow them.
func TestMountReclaimLinks(t *testing.T) {
	m := testMounter(t)
	m.do(job(m, "w", 1, owner(4242, 4242), map[string]string{"A": "1"}, map[string]string{"S": "x"}))
	outside := t.TempDir()
	os.Chmod(outside, 0o755)
	os.WriteFile(filepath.Join(outside, "keep"), []byte("keep"), 0o644)
	vdir := filepath.Join(m.dir, ".w", "1")
	// What the workload could do as the owner: open its directory up and
	// swap its secrets directory for a link.
	os.Chmod(vdir, 0o700)
	os.RemoveAll(filepath.Join(vdir, "secrets"))
	if err := os.Symlink(outside, filepath.Join(vdir, "secrets")); err != nil {
		t.Fatal(err)
	}
	os.Symlink(outside, filepath.Join(vdir, "other"))
	m.do(job(m, "w", 2, owner(4242, 4242), map[string]string{"A": "2"}, nil))
	fi, err := os.Stat(outside)
	if err != nil || fi.Mode().Perm() != 0o755 || fi.Sys().(*syscall.Stat_t).Uid != uint32(os.Geteuid()) {
		t.Errorf("the directory outside changed: %v %v", fi.Mode(), err)
	}
	if b, err := os.ReadFile(filepath.Join(outside, "keep")); err != nil || string(b) != "keep" {
		t.Errorf("a file outside changed: %q %v", b, err)
	}
	if _, err := os.Lstat(vdir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old version not removed: %v", err)
	}
}

func TestMountSweep(t *testing.T) {
	m := testMounter(t)
	for _, id := range []string{"keep", "gone", "gone.too"} {
		m.do(job(m, id, 1, owner(4242, 4242), map[string]string{"A": "1"}, nil))
	}
	other := filepath.Join(m.dir, "README")
	os.WriteFile(other, []byte("not ours"), 0o644)
	m.do(&mountJob{keep: map[string]bool{"keep": true}})
	names := []string{}
	entries, _ := os.ReadDir(m.dir)
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{".keep", "README", "keep"}; !equalStrings(names, want) {
		t.Errorf("after sweep: %v, want %v", names, want)
	}
}

// TestMountSweepSkipsBusy: the sweep leaves alone a workload whose job a
// writer is doing (registered after the sweep's list was made), and
// removes the rest of what is stale.
func TestMountSweepSkipsBusy(t *testing.T) {
	m := testMounter(t)
	m.writers = 2
	for _, id := range []string{"gone", "late"} {
		m.do(job(m, id, 1, owner(4242, 4242), map[string]string{"A": "1"}, nil))
	}
	m.jobDone = make(chan string, 4)
	began := make(chan string, 2)
	release := map[string]chan struct{}{"": make(chan struct{}), "late": make(chan struct{})}
	m.beforeWrite = func(j *mountJob) {
		began <- j.id
		<-release[j.id]
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	m.enqueue(&mountJob{keep: map[string]bool{}})
	<-began
	m.enqueue(job(m, "late", 2, owner(4242, 4242), map[string]string{"A": "2"}, nil))
	<-began
	close(release[""]) // the sweep runs while "late" is being written
	if id := <-m.jobDone; id != "" {
		t.Fatalf("done %q first, want the sweep", id)
	}
	if target, err := os.Readlink(filepath.Join(m.dir, "late")); err != nil || target != ".late/1" {
		t.Errorf("the sweep took the mount being written: %q %v", target, err)
	}
	close(release["late"])
	<-m.jobDone
	if _, err := os.Lstat(filepath.Join(m.dir, "gone")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the stale mount is still there: %v", err)
	}
	if target, err := os.Readlink(filepath.Join(m.dir, "late")); err != nil || target != ".late/2" {
		t.Errorf("late: %q %v, want .late/2", target, err)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestMountCoalesce: versions queued while the writer is busy collapse to
// the latest, and each workload's versions are written in order.
func TestMountCoalesce(t *testing.T) {
	m := testMounter(t)
	m.jobDone = make(chan string, 100)
	for i := 1; i <= 5; i++ {
		m.enqueue(job(m, "a", int64(i), owner(4242, 4242), map[string]string{"A": strconv.Itoa(i)}, nil))
		m.enqueue(job(m, "b", int64(i), owner(4242, 4242), map[string]string{"A": strconv.Itoa(i)}, nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	got := []string{<-m.jobDone, <-m.jobDone}
	cancel()
	<-done
	sort.Strings(got) // the writers do a and b side by side
	if !equalStrings(got, []string{"a", "b"}) || len(m.jobDone) != 0 {
		t.Fatalf("jobs done: %v and %d more; want a, b once each", got, len(m.jobDone))
	}
	for _, id := range []string{"a", "b"} {
		if target, _ := os.Readlink(filepath.Join(m.dir, id)); target != "."+id+"/5" {
			t.Errorf("%s: %q, want the latest version", id, target)
		}
	}
}

// TestMountParallel: many workloads changing at once are written side by
// side, each to its own latest version, with nothing else left in its
// directory.
func TestMountParallel(t *testing.T) {
	m := testMounter(t)
	m.writers = 4
	const n, rounds = 64, 3
	m.jobDone = make(chan string, n*rounds)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	// The first job waits until a writer has begun another: with one
	// writer at a time it would wait for ever.
	other := make(chan struct{})
	var once sync.Once
	m.beforeWrite = func(j *mountJob) {
		if j.id == "w00" && j.rev == 1 {
			select {
			case <-other:
			case <-time.After(10 * time.Second):
				t.Error("no other job began while one was being done")
			}
			return
		}
		once.Do(func() { close(other) })
	}
	for r := 1; r <= rounds; r++ {
		for i := range n {
			m.enqueue(job(m, fmt.Sprintf("w%02d", i), int64(r), owner(4242, 4242),
				map[string]string{"V": fmt.Sprintf("%d-%d", i, r)}, map[string]string{"S": strconv.Itoa(r)}))
		}
		for range n {
			<-m.jobDone
		}
	}
	for i := range n {
		id := fmt.Sprintf("w%02d", i)
		env, err := os.ReadFile(filepath.Join(m.dir, id, "env"))
		if want := fmt.Sprintf("\nV=\"%d-%d\"\n", i, rounds); err != nil || !strings.Contains(string(env), want) {
			t.Errorf("%s/env: %q, %v; want %q in it", id, env, err, want)
		}
		entries, _ := os.ReadDir(filepath.Join(m.dir, "."+id))
		if len(entries) != 1 || entries[0].Name() != strconv.Itoa(rounds) {
			t.Errorf(".%s holds %v, want only version %d", id, entries, rounds)
		}
	}
}

// TestMountBurst: one workload changing many times while the writers are
// busy is written in order and ends holding the last version; a reader
// never sees a version older than one it saw, nor a mix of two. Versions
// queued behind the one being written collapse into the latest.
func TestMountBurst(t *testing.T) {
	m := testMounter(t)
	m.writers = 4
	const last = 200
	var mu sync.Mutex
	var order []int64 // the revisions of w written, in the order the writers began them
	m.beforeWrite = func(j *mountJob) {
		if j.id == "w" {
			mu.Lock()
			order = append(order, int64(j.rev))
			mu.Unlock()
		}
	}
	m.jobDone = make(chan string, 4*last)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	version := func(i int) *mountJob {
		v := strconv.Itoa(i)
		return job(m, "w", int64(i), owner(4242, 4242), map[string]string{"A": v, "B": v}, map[string]string{"S": v})
	}
	m.enqueue(version(1))
	<-m.jobDone
	link := filepath.Join(m.dir, "w")
	var stop atomic.Bool
	var wg sync.WaitGroup
	for r := 0; r < 2; r++ {
		wg.Go(func() {
			seen := 0
			for !stop.Load() {
				got, err := readVersion(link)
				if errors.Is(err, os.ErrNotExist) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				if got < seen {
					t.Errorf("version went back from %d to %d", seen, got)
				}
				seen = got
			}
		})
	}
	// Some noise on other workloads, so every writer is busy.
	for i := 2; i <= last; i++ {
		m.enqueue(version(i))
		m.enqueue(job(m, "other"+strconv.Itoa(i%8), int64(i), owner(4242, 4242), map[string]string{"A": "x"}, nil))
	}
	for {
		if target, _ := os.Readlink(link); target == ".w/"+strconv.Itoa(last) {
			m.mu.Lock()
			idle := m.pending["w"] == nil && m.busy["w"] == nil
			m.mu.Unlock()
			if idle {
				break
			}
		}
		<-m.jobDone
	}
	stop.Store(true)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(order); i++ {
		if order[i] <= order[i-1] {
			t.Errorf("w's versions written out of order: %v", order)
			break
		}
	}
	t.Logf("%d versions queued, %d written", last, len(order))
	if got, err := readVersion(link); err != nil || got != last {
		t.Errorf("the mount holds version %d (%v), want %d", got, err, last)
	}
	entries, _ := os.ReadDir(filepath.Join(m.dir, ".w"))
	if len(entries) != 1 {
		t.Errorf(".w holds %v, want the last version alone", entries)
	}
}

// TestMountHolds: the version the writer is busy writing counts as held,
// so a resolution that changes nothing queues no second write of it (a
// registration is resolved twice in a row: when it is put, and with the
// batch that brought it); once written it is held while its link is there;
// a version whose write failed, or whose link was removed, is not.
func TestMountHolds(t *testing.T) {
	m := testMounter(t)
	m.jobDone = make(chan string, 10)
	writing, release := make(chan string), make(chan struct{})
	m.beforeWrite = func(j *mountJob) {
		writing <- j.id
		<-release
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	one, two := uint64(1), uint64(2)
	j := job(m, "a", 1, owner(4242, 4242), map[string]string{"A": "1"}, nil)
	j.sum = one
	m.enqueue(j)
	if id := <-writing; id != "a" {
		t.Fatalf("writing %q", id)
	}
	if !m.holds("a", one) || m.holds("a", two) {
		t.Errorf("while being written: holds(one) %v holds(two) %v, want true false", m.holds("a", one), m.holds("a", two))
	}
	release <- struct{}{}
	<-m.jobDone
	if !m.holds("a", one) || m.holds("a", two) {
		t.Errorf("written: holds(one) %v holds(two) %v, want true false", m.holds("a", one), m.holds("a", two))
	}
	if err := os.Remove(filepath.Join(m.dir, "a")); err != nil {
		t.Fatal(err)
	}
	if m.holds("a", one) {
		t.Error("held after its link was removed")
	}

	// A write that fails (something not a directory where its versions
	// go) leaves nothing held.
	if err := os.WriteFile(filepath.Join(m.dir, ".b"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	j = job(m, "b", 1, owner(4242, 4242), map[string]string{"B": "1"}, nil)
	j.sum = one
	m.enqueue(j)
	<-writing
	release <- struct{}{}
	<-m.jobDone
	if m.holds("b", one) {
		t.Error("held after its write failed")
	}
}

// BenchmarkMountRewrite: the writers rewriting n mounts of 64 variables
// (a new version of each, the old one removed), as a change fanning out to
// n mounted workloads makes them, per mount; with 1 to 8 writers. The
// mounts go to a tmpfs (/dev/shm) when there is one, as /run/envlet/mounts
// is; ENVLET_MOUNT_BENCH_DIR picks another directory.
//
//	go test -run '^$' -bench MountRewrite ./agent/
func BenchmarkMountRewrite(b *testing.B) {
	const n = 2000
	vars := map[string]string{}
	for i := range 64 {
		vars[fmt.Sprintf("VAR_%06d", i)] = strings.Repeat(string(rune('a'+i%26)), 32)
	}
	for _, writers := range []int{1, 2, 4, 8} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			m := benchMounter(b)
			m.writers = writers
			m.jobDone = make(chan string, n)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { m.Run(ctx); close(done) }()
			defer func() { cancel(); <-done }()
			rev := int64(0)
			var cpu time.Duration
			// round rewrites every mount; only the writing is timed, not
			// the making of the jobs (updateMount's, under the agent's lock).
			round := func() {
				b.StopTimer()
				rev++
				jobs := make([]*mountJob, n)
				for i := range jobs {
					jobs[i] = job(m, fmt.Sprintf("w%05d", i), rev, owner(4242, 4242), vars, nil)
				}
				cpu0 := cpuTime()
				b.StartTimer()
				for _, j := range jobs {
					m.enqueue(j)
				}
				for range n {
					<-m.jobDone
				}
				cpu += cpuTime() - cpu0
			}
			round()
			cpu = 0
			b.ResetTimer()
			for range b.N {
				round()
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*n), "µs/mount")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*n), "cpu-µs/mount")
		})
	}
}

// cpuTime is the CPU time the process used so far, user and system.
func cpuTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchMounter(b *testing.B) *mounter {
	parent := os.Getenv("ENVLET_MOUNT_BENCH_DIR")
	if parent == "" {
		var st unix.Statfs_t
		if unix.Statfs("/dev/shm", &st) == nil && st.Type == unix.TMPFS_MAGIC {
			parent = "/dev/shm"
		}
	}
	dir, err := os.MkdirTemp(parent, "elm")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		m := newMounter(dir, hclog.NewNullLogger(), cache.NewPool())
		m.reclaim(dir)
	})
	return newMounter(filepath.Join(dir, "mounts"), hclog.NewNullLogger(), cache.NewPool())
}
