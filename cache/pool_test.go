package cache

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func addr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func fill(b []byte, c byte) {
	for i := range b {
		b[i] = c
	}
}

func TestAllocFreeReuseZeroes(t *testing.T) {
	for _, n := range []int{1, 31, 32, 33, 100, 1000, 4096, 5000, maxClass - 1, maxClass} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			p := NewPool()
			b := p.Alloc(n)
			got := b.Bytes()
			if len(got) != n || cap(got) != n || b.Len() != n {
				t.Fatalf("Alloc(%d): len %d cap %d Len %d", n, len(got), cap(got), b.Len())
			}
			if !isZero(got) {
				t.Fatal("fresh Buf is not zero")
			}
			fill(got, 0xA5)
			slot := b.mem // the whole slot, to check beyond len too
			b.Free()
			if !isZero(slot) {
				t.Fatal("Free did not zero the slot")
			}
			if b.Bytes() != nil || b.Len() != 0 {
				t.Fatal("Bytes or Len after Free is not empty")
			}
			// The same class hands the same slot back, zeroed.
			b2 := p.Alloc(n)
			if addr(b2.Bytes()) != addr(got) {
				t.Fatalf("Alloc after Free did not reuse the slot")
			}
			if !isZero(b2.Bytes()) {
				t.Fatal("reused slot is not zero")
			}
			b.Free() // a double Free must not free b2's slot
			if b2.Bytes() == nil {
				t.Fatal("double Free of the old Buf affected the new one")
			}
			b3 := p.Alloc(n)
			if addr(b3.Bytes()) == addr(b2.Bytes()) {
				t.Fatal("double Free put a live slot back on the free list")
			}
		})
	}
}

func TestZeroAndNil(t *testing.T) {
	p := NewPool()
	b := p.Alloc(0)
	if got := b.Bytes(); got == nil || len(got) != 0 {
		t.Fatalf("Alloc(0).Bytes() = %v, want empty non-nil", got)
	}
	if s := p.Stats(); s.Buffers != 1 || s.InUseBytes != 0 {
		t.Fatalf("stats after Alloc(0): %+v", s)
	}
	b.Free()
	b.Free()
	if b.Bytes() != nil {
		t.Fatal("Bytes after Free is not nil")
	}
	if s := p.Stats(); s.Buffers != 0 {
		t.Fatalf("stats after Free: %+v", s)
	}
	c := p.Copy(nil)
	if c.Len() != 0 || c.Bytes() == nil {
		t.Fatal("Copy(nil) is not an empty Buf")
	}
	c.Free()

	var nb *Buf
	if nb.Bytes() != nil || nb.Len() != 0 {
		t.Fatal("nil Buf is not empty")
	}
	nb.Free()

	defer func() {
		if recover() == nil {
			t.Fatal("Alloc(-1) did not panic")
		}
	}()
	p.Alloc(-1)
}

func TestCopy(t *testing.T) {
	p := NewPool()
	src := []byte("s3cr3t-value")
	b := p.Copy(src)
	if !bytes.Equal(b.Bytes(), src) {
		t.Fatalf("Copy = %q", b.Bytes())
	}
	src[0] = 'X'
	if b.Bytes()[0] != 's' {
		t.Fatal("Copy aliases its argument")
	}
	big := bytes.Repeat([]byte{7}, 200<<10)
	lb := p.Copy(big)
	if !bytes.Equal(lb.Bytes(), big) {
		t.Fatal("large Copy differs")
	}
	lb.Free()
	b.Free()
}

func TestStats(t *testing.T) {
	p := NewPool()
	s := p.Stats()
	if s.MappedBytes != chunkSize || s.Buffers != 0 || s.InUseBytes != 0 {
		t.Fatalf("new pool: %+v", s)
	}
	if !s.Locked || s.LockedBytes != chunkSize {
		t.Fatalf("new pool is not locked (tests run as root): %+v", s)
	}
	var bufs []*Buf
	var want int64
	for _, n := range []int{1, 32, 33, 500, 4096, 10000} {
		bufs = append(bufs, p.Alloc(n))
		want += int64(n)
	}
	s = p.Stats()
	if s.InUseBytes != want || s.Buffers != len(bufs) || s.MappedBytes != chunkSize {
		t.Fatalf("after small allocs: %+v, want InUse %d Buffers %d", s, want, len(bufs))
	}

	// A large Buf has a page-rounded mapping of its own.
	lb := p.Alloc(maxClass + 1)
	s = p.Stats()
	wantMap := int64(chunkSize + (maxClass+1+pageSize-1)/pageSize*pageSize)
	if s.MappedBytes != wantMap || s.LockedBytes != wantMap || s.InUseBytes != want+maxClass+1 {
		t.Fatalf("after large alloc: %+v, want Mapped %d", s, wantMap)
	}
	lb.Free()
	s = p.Stats()
	if s.MappedBytes != chunkSize || s.LockedBytes != chunkSize || s.InUseBytes != want {
		t.Fatalf("after large free: %+v", s)
	}

	for _, b := range bufs {
		b.Free()
	}
	s = p.Stats()
	if s.InUseBytes != 0 || s.Buffers != 0 || s.MappedBytes != chunkSize {
		t.Fatalf("after frees: %+v", s)
	}
}

// TestChunkRollover fills a chunk so the next allocation needs a new one,
// and checks that the old chunk's leftover is cut into smaller slots rather
// than lost.
func TestChunkRollover(t *testing.T) {
	p := NewPool()
	a := p.Alloc(100)   // 128-byte class
	b := p.Alloc(20000) // 20480-byte class
	c := p.Alloc(maxClass)
	if got := p.Stats().MappedBytes; got != chunkSize {
		t.Fatalf("mapped %d, want one chunk", got)
	}
	left := chunkSize - 128 - classSize[classOf(20000)] - maxClass
	d := p.Alloc(left + 1) // does not fit: a second chunk
	if got := p.Stats().MappedBytes; got != 2*chunkSize {
		t.Fatalf("mapped %d, want two chunks", got)
	}
	first := p.chunks[0]
	lo, hi := addr(first), addr(first)+uintptr(len(first))
	// The leftover is on the free lists as the largest slots that fit, and
	// each is handed out from the first chunk.
	var sizes []int
	total := 0
	for c := numClasses - 1; c >= 0; c-- {
		for range p.free[c] {
			sizes = append(sizes, classSize[c])
			total += classSize[c]
		}
	}
	if total != left || len(sizes) == 0 {
		t.Fatalf("free slots %v hold %d bytes, want the leftover %d", sizes, total, left)
	}
	bufs := []*Buf{a, b, c, d}
	for _, sz := range sizes {
		x := p.Alloc(sz)
		bufs = append(bufs, x)
		if at := addr(x.Bytes()); at < lo || at >= hi {
			t.Errorf("Alloc(%d) not served from the first chunk's leftover", sz)
		}
	}
	if got := p.Stats().MappedBytes; got != 2*chunkSize {
		t.Fatalf("mapped %d after using leftovers, want two chunks", got)
	}
	for _, x := range bufs {
		x.Free()
	}
}

// TestSizeClasses checks every size a slot can hold: the class is the
// smallest that fits, wastes less than 32 bytes up to 256 and at most
// 12.5% beyond, and every class is a multiple of 32 bytes.
func TestSizeClasses(t *testing.T) {
	if classSize[0] != minClass || classSize[numClasses-1] != maxClass {
		t.Fatalf("classes run from %d to %d, want %d to %d", classSize[0], classSize[numClasses-1], minClass, maxClass)
	}
	for c := range numClasses {
		if classSize[c]%minClass != 0 || c > 0 && classSize[c] <= classSize[c-1] {
			t.Fatalf("class %d is %d bytes (previous %d): want increasing multiples of %d", c, classSize[c], classSize[max(c-1, 0)], minClass)
		}
	}
	for n := 1; n <= maxClass; n++ {
		c := classOf(n)
		if c < 0 || c >= numClasses {
			t.Fatalf("classOf(%d) = %d, out of range", n, c)
		}
		size := classSize[c]
		switch {
		case size < n:
			t.Fatalf("classOf(%d): %d-byte slot is too small", n, size)
		case c > 0 && classSize[c-1] >= n:
			t.Fatalf("classOf(%d) = %d bytes, but %d bytes fit", n, size, classSize[c-1])
		case n <= linearMax && size-n >= minClass:
			t.Fatalf("classOf(%d) = %d bytes: wastes %d", n, size, size-n)
		case n > linearMax && (size-n)*8 > n:
			t.Fatalf("classOf(%d) = %d bytes: wastes over 12.5%%", n, size)
		}
	}
}

// TestClassSlots allocates a Buf of every class boundary and one byte
// past it: each gets a slot of its class, zeroed, reused after Free, and
// the slots of live Bufs never overlap.
func TestClassSlots(t *testing.T) {
	p := NewPool()
	type span struct{ lo, hi uintptr }
	var live []*Buf
	var spans []span
	for c := range numClasses {
		for _, n := range []int{classSize[c], classSize[c] - 1, classSize[c] + 1} {
			if n < 1 || n > maxClass {
				continue
			}
			b := p.Alloc(n)
			if len(b.mem) != classSize[classOf(n)] || b.Len() != n || !isZero(b.mem) {
				t.Fatalf("Alloc(%d): slot %d bytes, Len %d, want a zero slot of %d", n, len(b.mem), b.Len(), classSize[classOf(n)])
			}
			fill(b.Bytes(), 0xC3)
			live = append(live, b)
			spans = append(spans, span{addr(b.mem), addr(b.mem) + uintptr(len(b.mem))})
		}
	}
	for i, x := range spans {
		for j, y := range spans[:i] {
			if x.lo < y.hi && y.lo < x.hi {
				t.Fatalf("slots %d and %d overlap", i, j)
			}
		}
	}
	s := p.Stats()
	if s.Buffers != len(live) {
		t.Fatalf("Buffers %d, want %d", s.Buffers, len(live))
	}
	for _, b := range live {
		slot := b.mem
		b.Free()
		if !isZero(slot) {
			t.Fatalf("Free left bytes in a %d-byte slot", len(slot))
		}
	}
	if s := p.Stats(); s.Buffers != 0 || s.InUseBytes != 0 {
		t.Fatalf("after Free: %+v", s)
	}
	// Every class is now on its free list: the same sizes map nothing new.
	mapped := p.Stats().MappedBytes
	for c := range numClasses {
		p.Alloc(classSize[c]).Free()
	}
	if got := p.Stats().MappedBytes; got != mapped {
		t.Fatalf("reallocating freed classes mapped %d more bytes", got-mapped)
	}
}

func TestLargeUnmapped(t *testing.T) {
	p := NewPool()
	n := 1<<20 + 3
	b := p.Alloc(n)
	m := b.Bytes()
	if len(m) != n || !isZero(m) {
		t.Fatal("large Buf is not n zero bytes")
	}
	fill(m, 0x5A)
	start := addr(m)
	if !mappingOf(t, start).has("lo") {
		t.Fatal("large mapping not locked")
	}
	b.Free()
	if _, ok := findMapping(t, start); ok {
		t.Fatal("large mapping still present after Free")
	}
	b.Free()
}

// smapsEntry is one mapping of /proc/self/smaps.
type smapsEntry struct {
	start, end uintptr
	fields     map[string]string
	flags      []string
}

func (e smapsEntry) has(flag string) bool {
	for _, f := range e.flags {
		if f == flag {
			return true
		}
	}
	return false
}

func findMapping(t *testing.T, a uintptr) (smapsEntry, bool) {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatalf("open smaps: %v", err)
	}
	defer f.Close()
	var cur *smapsEntry
	var found smapsEntry
	ok := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if lo, hi, isRange := strings.Cut(fields[0], "-"); isRange && !strings.HasSuffix(fields[0], ":") {
			s, err1 := strconv.ParseUint(lo, 16, 64)
			e, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 == nil && err2 == nil {
				if cur != nil && cur.start <= a && a < cur.end {
					found, ok = *cur, true
				}
				cur = &smapsEntry{start: uintptr(s), end: uintptr(e), fields: map[string]string{}}
				continue
			}
		}
		if cur == nil {
			continue
		}
		if fields[0] == "VmFlags:" {
			cur.flags = fields[1:]
		} else if strings.HasSuffix(fields[0], ":") && len(fields) >= 2 {
			cur.fields[strings.TrimSuffix(fields[0], ":")] = fields[1]
		}
	}
	if cur != nil && cur.start <= a && a < cur.end {
		found, ok = *cur, true
	}
	return found, ok
}

func mappingOf(t *testing.T, a uintptr) smapsEntry {
	t.Helper()
	e, ok := findMapping(t, a)
	if !ok {
		t.Fatalf("no mapping holds %#x", a)
	}
	return e
}

// TestSmapsLockedDontDump reads the kernel's view of a chunk: it must be
// locked in RAM and excluded from core dumps.
func TestSmapsLockedDontDump(t *testing.T) {
	p := NewPool()
	b := p.Copy([]byte("canary"))
	defer b.Free()
	e := mappingOf(t, addr(b.Bytes()))
	locked, err := strconv.Atoi(e.fields["Locked"])
	if err != nil || locked <= 0 {
		t.Errorf("chunk Locked: %q kB, want > 0", e.fields["Locked"])
	}
	for _, flag := range []string{"lo", "dd", "wf"} {
		if !e.has(flag) {
			t.Errorf("chunk VmFlags %v lack %q", e.flags, flag)
		}
	}
}

func TestConcurrent(t *testing.T) {
	p := NewPool()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var held []*Buf
			for i := range 2000 {
				n := (i*37 + g*101) % 5000
				if i%97 == 0 {
					n = maxClass + i
				}
				b := p.Alloc(n)
				m := b.Bytes()
				if !isZero(m) {
					t.Error("Alloc returned non-zero memory")
					return
				}
				fill(m, byte(g+1))
				held = append(held, b)
				if len(held) > 16 {
					victim := held[0]
					held = held[1:]
					for _, c := range victim.Bytes() {
						if c != byte(g+1) {
							t.Error("another goroutine wrote into a live Buf")
							return
						}
					}
					// Racing double frees must be harmless.
					var fw sync.WaitGroup
					fw.Add(2)
					go func() { victim.Free(); fw.Done() }()
					go func() { victim.Free(); fw.Done() }()
					fw.Wait()
				}
			}
			for _, b := range held {
				b.Free()
			}
		}()
	}
	wg.Wait()
	if s := p.Stats(); s.Buffers != 0 || s.InUseBytes != 0 {
		t.Fatalf("after concurrent use: %+v", s)
	}
}

// TestUnlockedCarriesOn runs a child that cannot lock memory (no
// CAP_IPC_LOCK and RLIMIT_MEMLOCK 0): the pool must still work and report
// Locked false.
func TestUnlockedCarriesOn(t *testing.T) {
	if os.Getenv("ENVLET_CACHE_UNLOCKED_CHILD") == "1" {
		unlockedChild()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestUnlockedCarriesOn$", "-test.v")
	cmd.Env = append(os.Environ(), "ENVLET_CACHE_UNLOCKED_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("UNLOCKED-OK")) {
		t.Fatalf("child did not confirm:\n%s", out)
	}
}

func unlockedChild() {
	fail := func(format string, args ...any) {
		fmt.Printf("child: "+format+"\n", args...)
		os.Exit(1)
	}
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{}); err != nil {
		fail("setrlimit: %v", err)
	}
	// Capabilities are per thread: drop CAP_IPC_LOCK on this one and map
	// from it.
	runtime.LockOSThread()
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		fail("capget: %v", err)
	}
	data[0].Effective &^= 1 << unix.CAP_IPC_LOCK
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		fail("capset: %v", err)
	}
	p := NewPool()
	b := p.Copy([]byte("still works"))
	lb := p.Alloc(100 << 10)
	s := p.Stats()
	if s.Locked || s.LockedBytes != 0 || s.MappedBytes == 0 {
		fail("stats %+v, want unlocked", s)
	}
	if string(b.Bytes()) != "still works" || lb.Len() != 100<<10 {
		fail("unlocked memory does not hold its bytes")
	}
	b.Free()
	lb.Free()
	fmt.Println("UNLOCKED-OK")
}

func BenchmarkAllocFree(b *testing.B) {
	for _, n := range []int{32, 256, 4096, 64 << 10} {
		b.Run(fmt.Sprintf("size=%d/pool", n), func(b *testing.B) {
			p := NewPool()
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				p.Alloc(n).Free()
			}
		})
		// The baseline: a heap slice, cleared like Free clears.
		b.Run(fmt.Sprintf("size=%d/heap", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				m := make([]byte, n)
				clear(m)
				sink = m
			}
		})
	}
}

var sink []byte
