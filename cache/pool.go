package cache

import (
	"math/bits"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

const (
	// chunkSize is the size of the mappings that small Bufs are carved from.
	chunkSize = 64 << 10
	// Size classes run from minClass to maxClass (half a chunk): every
	// multiple of 32 bytes up to 256, then eight classes per doubling
	// (256, 288, 320, … 512, 576, … 32 KiB), so a slot wastes less than
	// 32 bytes or 12.5% of what it holds. Anything larger gets its own
	// mapping. Every class is a multiple of minClass, so the slots cut
	// from a chunk stay 32-byte aligned.
	minClassShift = 5
	maxClassShift = 15
	minClass      = 1 << minClassShift
	maxClass      = 1 << maxClassShift
	// linearMax is the last class of the 32-byte steps; stepsPerDoubling
	// classes follow per doubling up to maxClass.
	linearMax        = 256
	stepsShift       = 3
	stepsPerDoubling = 1 << stepsShift
	numLinear        = linearMax / minClass
	numClasses       = numLinear + (maxClassShift-8)*stepsPerDoubling
)

// classSize holds each class's slot size, smallest first.
var classSize = func() (s [numClasses]int) {
	for c := range numLinear {
		s[c] = (c + 1) * minClass
	}
	for k := 8; k < maxClassShift; k++ {
		base, step := 1<<k, 1<<(k-stepsShift)
		for j := 1; j <= stepsPerDoubling; j++ {
			s[numLinear+(k-8)*stepsPerDoubling+j-1] = base + j*step
		}
	}
	return s
}()

// large marks a Buf that owns a whole mapping instead of a slot in a chunk.
const large = -1

// Stats describes a Pool's memory.
type Stats struct {
	// Locked reports whether every mlock the pool attempted succeeded. When
	// it is false some values may reach swap; the agent reports it.
	Locked bool
	// LockedBytes is the size of the mappings that are locked in RAM.
	LockedBytes int64
	// MappedBytes is the size of all the pool's mappings: chunks, free or
	// not, and large Bufs' own mappings.
	MappedBytes int64
	// InUseBytes is the sum of Len over the Bufs that are not freed.
	InUseBytes int64
	// Buffers is the number of Bufs that are not freed.
	Buffers int
}

// Pool hands out locked, zeroized Bufs. It is safe for concurrent use. The
// zero Pool is not usable; call NewPool.
type Pool struct {
	mu sync.Mutex
	// free holds, per size class, slots that are all zero and ready to
	// hand out. The slices point into chunks, never into the Go heap.
	free [numClasses][][]byte
	// rest is the part of the newest chunk not yet cut into slots.
	rest   []byte
	chunks [][]byte
	stats  Stats
	// mlockFailed records that some mlock failed; it stays set, even after
	// the failing mapping is gone, since the values it held may be in swap.
	mlockFailed bool
}

// Buf is a slice of locked memory from a Pool. A Buf is used by one owner at a
// time; Free may race only with other calls of Free.
type Buf struct {
	pool   *Pool
	mem    []byte // the whole slot or mapping
	n      int
	class  int  // size class index, or large
	locked bool // a large Buf's own mapping is locked
	freed  atomic.Bool
}

// NewPool returns a Pool with its first chunk mapped, so Stats says at once
// whether memory could be locked. Like make, NewPool and Alloc panic if the
// kernel refuses to map memory at all; a failure to lock or to exclude from
// core dumps is not fatal and shows in Stats.
func NewPool() *Pool {
	p := &Pool{}
	p.mu.Lock()
	p.rest = p.mapChunk()
	p.mu.Unlock()
	return p
}

// Alloc returns a Buf of n zero bytes. Alloc(0) returns a Buf whose Bytes is
// empty but not nil. It panics if n is negative or memory cannot be mapped.
func (p *Pool) Alloc(n int) *Buf {
	switch {
	case n < 0:
		panic("cache: negative allocation size")
	case n == 0:
		p.mu.Lock()
		p.stats.Buffers++
		p.mu.Unlock()
		return &Buf{pool: p, class: 0}
	case n > maxClass:
		return p.allocLarge(n)
	}
	c := classOf(n)
	p.mu.Lock()
	slot := p.slot(c)
	p.stats.InUseBytes += int64(n)
	p.stats.Buffers++
	p.mu.Unlock()
	return &Buf{pool: p, mem: slot, n: n, class: c}
}

// Copy returns a Buf holding a copy of b. The caller should clear b if it was
// the only other copy.
func (p *Pool) Copy(b []byte) *Buf {
	buf := p.Alloc(len(b))
	copy(buf.mem, b)
	return buf
}

// Stats returns the pool's current accounting.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Locked = !p.mlockFailed
	return s
}

// Bytes returns the Buf's memory: len and cap are Len. It returns nil for a
// nil or freed Buf. The slice must not be used after Free.
func (b *Buf) Bytes() []byte {
	if b == nil || b.freed.Load() {
		return nil
	}
	if b.n == 0 {
		return []byte{}
	}
	return b.mem[:b.n:b.n]
}

// Len returns the Buf's length: 0 for a nil or freed Buf.
func (b *Buf) Len() int {
	if b == nil || b.freed.Load() {
		return 0
	}
	return b.n
}

// Free zeroes the Buf's memory and gives it back: a slot returns to its
// pool's free list, a large Buf's mapping is unmapped. Free of a nil Buf and
// any Free after the first do nothing.
func (b *Buf) Free() {
	if b == nil || !b.freed.CompareAndSwap(false, true) {
		return
	}
	p := b.pool
	if b.n == 0 {
		p.mu.Lock()
		p.stats.Buffers--
		p.mu.Unlock()
		return
	}
	// Only the winner of the CompareAndSwap gets here, so nothing else can
	// be writing to the slot: a new owner gets it only after the push below.
	clear(b.mem)
	if b.class == large {
		// Unmapping a mapping we made can only fail on a bad address,
		// which would be a bug here; the memory is zero either way.
		_ = unix.Munmap(b.mem)
	}
	p.mu.Lock()
	p.stats.InUseBytes -= int64(b.n)
	p.stats.Buffers--
	if b.class == large {
		p.stats.MappedBytes -= int64(len(b.mem))
		if b.locked {
			p.stats.LockedBytes -= int64(len(b.mem))
		}
	} else {
		p.free[b.class] = append(p.free[b.class], b.mem)
	}
	p.mu.Unlock()
}

// classOf returns the size class index for 0 < n <= maxClass: the
// smallest class that holds n bytes.
func classOf(n int) int {
	if n <= linearMax {
		return (n+minClass-1)>>minClassShift - 1
	}
	// 2^k < n <= 2^(k+1), k >= 8; the classes of that doubling are
	// 2^k + j*2^(k-3) for j = 1..8.
	k := bits.Len(uint(n-1)) - 1
	j := (n - 1<<k + 1<<(k-stepsShift) - 1) >> (k - stepsShift)
	return numLinear + (k-8)*stepsPerDoubling + j - 1
}

// slot returns a zeroed slot of class c. p.mu is held.
func (p *Pool) slot(c int) []byte {
	if l := len(p.free[c]); l > 0 {
		s := p.free[c][l-1]
		p.free[c][l-1] = nil
		p.free[c] = p.free[c][:l-1]
		return s
	}
	size := classSize[c]
	if len(p.rest) < size {
		// Cut what is left of the old chunk into the largest slots that
		// fit, so no locked memory goes to waste, then start a new one.
		// rest is always a multiple of minClass, since every cut is.
		for cc := numClasses - 1; cc >= 0 && len(p.rest) > 0; cc-- {
			for sz := classSize[cc]; len(p.rest) >= sz; {
				p.free[cc] = append(p.free[cc], p.rest[:sz:sz])
				p.rest = p.rest[sz:]
			}
		}
		p.rest = p.mapChunk()
	}
	s := p.rest[:size:size]
	p.rest = p.rest[size:]
	return s
}

// mapChunk maps, locks and marks a new chunk. p.mu is held.
func (p *Pool) mapChunk() []byte {
	mem, locked := mapLocked(chunkSize)
	p.chunks = append(p.chunks, mem)
	p.account(len(mem), locked)
	return mem
}

// account adds a new mapping of size bytes to the stats. p.mu is held.
func (p *Pool) account(size int, locked bool) {
	p.stats.MappedBytes += int64(size)
	if locked {
		p.stats.LockedBytes += int64(size)
	} else {
		p.mlockFailed = true
	}
}

func (p *Pool) allocLarge(n int) *Buf {
	size := (n + pageSize - 1) &^ (pageSize - 1)
	mem, locked := mapLocked(size)
	p.mu.Lock()
	p.account(size, locked)
	p.stats.InUseBytes += int64(n)
	p.stats.Buffers++
	p.mu.Unlock()
	return &Buf{pool: p, mem: mem, n: n, class: large, locked: locked}
}

var pageSize = os.Getpagesize()

// mapLocked maps size bytes of anonymous private memory, locks them and keeps
// them out of core dumps and forked children. It reports whether mlock
// succeeded. It panics only if the mapping itself fails, as the runtime does
// when it runs out of memory.
func mapLocked(size int) (mem []byte, locked bool) {
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		panic("cache: map locked memory: " + err.Error())
	}
	// Advice before locking, so no page is ever faulted in without it.
	// Both are best effort: kernels before 3.4 (DONTDUMP) or 4.14
	// (WIPEONFORK) refuse them, and the memory is still usable.
	_ = unix.Madvise(mem, unix.MADV_DONTDUMP)
	_ = unix.Madvise(mem, unix.MADV_WIPEONFORK)
	// mlock fails with EPERM or ENOMEM past RLIMIT_MEMLOCK without
	// CAP_IPC_LOCK; any failure leaves the memory usable but swappable.
	locked = unix.Mlock(mem) == nil
	return mem, locked
}
