package agent

import (
	"encoding/binary"
	"sort"
	"strings"

	"github.com/envlet/envlet/cache"
)

// A workload's own layers (runtime, execution) are each one locked Buf of
// records sorted by name:
//
//	uvarint name id | uvarint value length | value
//
// The name id points into the agent's nameTable: names are not secret,
// and the workloads of one deployment mostly share them, so each is kept
// once in the Go heap however many workloads use it. The values live only
// in the locked Buf. An empty value clears the name (docs/design.md §2).

// nameTable interns the names of workloads' own variables. It changes
// only with Agent.mu held for writing, and is read with it held.
type nameTable struct {
	ids      map[string]uint32
	names    []string
	refs     []uint32 // workloads' layers that hold the name; 0: the id is free
	reserved []bool   // the name is reserved: resolution skips it (only platform may set one)
	free     []uint32
}

// intern returns name's id and takes a reference to it.
func (t *nameTable) intern(name string, reserved bool) uint32 {
	if id, ok := t.ids[name]; ok {
		t.refs[id]++
		return id
	}
	if t.ids == nil {
		t.ids = map[string]uint32{}
	}
	// A copy: the caller's string may be a slice of a decoded document.
	name = strings.Clone(name)
	var id uint32
	if n := len(t.free); n > 0 {
		id = t.free[n-1]
		t.free = t.free[:n-1]
		t.names[id], t.refs[id], t.reserved[id] = name, 1, reserved
	} else {
		id = uint32(len(t.names))
		t.names = append(t.names, name)
		t.refs = append(t.refs, 1)
		t.reserved = append(t.reserved, reserved)
	}
	t.ids[name] = id
	return id
}

// release drops a reference taken by intern.
func (t *nameTable) release(id uint32) {
	if t.refs[id]--; t.refs[id] == 0 {
		delete(t.ids, t.names[id])
		t.names[id] = ""
		t.free = append(t.free, id)
	}
}

// ownRecord decodes the record at the start of b: the name id, the value
// and the rest of the layer. ok is false at the end of b, or on a record
// that does not decode (which packOwn never writes).
func ownRecord(b []byte) (id uint32, val, rest []byte, ok bool) {
	if len(b) >= 2 && b[0] < 0x80 && b[1] < 0x80 && int(b[1]) <= len(b)-2 {
		// The common case: both varints of one byte.
		l := int(b[1])
		return uint32(b[0]), b[2 : 2+l : 2+l], b[2+l:], true
	}
	x, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, nil, nil, false
	}
	l, m := binary.Uvarint(b[n:])
	if m <= 0 || uint64(len(b)-n-m) < l {
		return 0, nil, nil, false
	}
	b = b[n+m:]
	return uint32(x), b[:l:l], b[l:], true
}

// ownVars packs a layer of a workload's own variables into locked memory,
// interning their names. nil for an empty layer. Called with a.mu held
// for writing.
func (a *Agent) ownVars(m map[string]string) *cache.Buf {
	if len(m) == 0 {
		return nil
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	ids := make([]uint32, len(names))
	size := 0
	for i, n := range names {
		ids[i] = a.rs.names.intern(n, a.reserved.Has(n))
		size += uvarintLen(uint64(ids[i])) + uvarintLen(uint64(len(m[n]))) + len(m[n])
	}
	out := a.pool.Alloc(size)
	b := out.Bytes()[:0]
	for i, n := range names {
		b = binary.AppendUvarint(b, uint64(ids[i]))
		b = binary.AppendUvarint(b, uint64(len(m[n])))
		b = append(b, m[n]...)
	}
	return out
}

func uvarintLen(x uint64) int {
	n := 1
	for ; x >= 0x80; x >>= 7 {
		n++
	}
	return n
}

// dropOwn releases the names of an own layer and frees it (zeroing the
// values). Called with a.mu held for writing.
func (a *Agent) dropOwn(b *cache.Buf) {
	for rest := b.Bytes(); ; {
		id, _, r, ok := ownRecord(rest)
		if !ok {
			break
		}
		a.rs.names.release(id)
		rest = r
	}
	b.Free()
}

// ownNames lists an own layer's names, in order. Called with a.mu held.
func (a *Agent) ownNames(b *cache.Buf) []string {
	out := []string{}
	for rest := b.Bytes(); ; {
		id, _, r, ok := ownRecord(rest)
		if !ok {
			return out
		}
		out = append(out, a.rs.names.names[id])
		rest = r
	}
}

// ownLayer turns an own layer into a resolution layer (explain). Called
// with a.mu held.
func (a *Agent) ownLayer(name string, b *cache.Buf) layer {
	l := layer{name: name}
	for rest := b.Bytes(); ; {
		id, val, r, ok := ownRecord(rest)
		if !ok {
			return l
		}
		l.vars = append(l.vars, layerVar{name: a.rs.names.names[id], value: val})
		rest = r
	}
}
