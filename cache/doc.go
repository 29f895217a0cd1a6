// Package cache owns the memory that holds secret values inside the agent:
// locked, zeroizing storage that lives outside the Go heap.
//
// A Pool hands out Bufs carved from anonymous private mappings (64 KiB
// chunks, or a mapping of their own for anything larger than half a chunk).
// Every mapping is mlock'ed, so its pages never reach swap, and marked
// MADV_DONTDUMP, so they never appear in a core dump, and MADV_WIPEONFORK, so
// a forked child starts with zeroes. Locking is best effort: without
// CAP_IPC_LOCK the kernel caps locked memory at RLIMIT_MEMLOCK, and when an
// mlock fails the pool keeps working with unlocked memory and says so in
// Stats.Locked, for the agent to report. Free zeroes a Buf before its memory
// is reused or unmapped, so a replaced or deleted value does not linger.
//
// The garbage collector does not see this memory, which is the point: the Go
// heap is copied, moved, scanned and dumped in ways this package cannot
// control. Small chunks are never returned to the kernel; a large Buf's
// mapping is unmapped on Free. A Buf that is dropped without Free keeps its
// bytes until the process exits, so callers free what they replace.
//
// What this package must not do: any I/O other than the mmap, mlock and
// madvise calls that make the memory; logging; or ever copying a value to the
// Go heap (no string conversions, no fmt, no growing a slice with append).
// Bytes returns a slice whose capacity is its length, so an append by a
// caller moves to the heap visibly rather than silently spilling out of the
// locked slot.
//
// The package is Linux-only: it relies on MADV_DONTDUMP and MADV_WIPEONFORK.
package cache
