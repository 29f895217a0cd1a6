package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"hash/maphash"
	"sort"
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/envlet/envlet/agent/wire"
)

// Audit records are encoded by hand: encoding/json spent most of a serve's
// audit cost in reflection and in sorting the HMAC map's keys. The output
// is byte for byte what json.Marshal gives for the same auditRecord
// (auditjson_test.go holds the two together, odd strings included).

// appendAuditJSON appends r as json.Marshal encodes it (no newline).
func appendAuditJSON(b []byte, r *auditRecord) []byte {
	b = append(b, `{"time":`...)
	b = appendAuditString(b, r.Time)
	b = append(b, `,"action":`...)
	b = appendAuditString(b, r.Action)
	if r.UID != nil {
		b = append(b, `,"uid":`...)
		b = strconv.AppendInt(b, *r.UID, 10)
	}
	b = appendAuditField(b, `,"user":`, r.User)
	if r.PID != 0 {
		b = append(b, `,"pid":`...)
		b = strconv.AppendInt(b, int64(r.PID), 10)
	}
	b = appendAuditField(b, `,"scope":`, r.Scope)
	b = appendAuditField(b, `,"name":`, r.Name)
	b = appendAuditField(b, `,"workload":`, r.Workload)
	if r.Revision != 0 {
		b = append(b, `,"revision":`...)
		b = strconv.AppendInt(b, r.Revision, 10)
	}
	if r.Lost != 0 {
		b = append(b, `,"lost":`...)
		b = strconv.AppendInt(b, r.Lost, 10)
	}
	b = appendAuditField(b, `,"from_secret":`, r.FromSecret)
	b = appendAuditField(b, `,"hmac":`, r.HMAC)
	switch {
	case r.hmacsJSON != nil:
		b = append(b, `,"hmacs":`...)
		b = append(b, r.hmacsJSON...)
	case len(r.HMACs) > 0:
		b = append(b, `,"hmacs":`...)
		b = appendHMACMap(b, r.HMACs)
	}
	b = appendAuditField(b, `,"code":`, r.Code)
	b = appendAuditField(b, `,"reason":`, r.Reason)
	b = appendAuditField(b, `,"request":`, r.Request)
	b = appendAuditField(b, `,"socket":`, r.Socket)
	b = appendAuditField(b, `,"workload_user":`, r.WorkloadUser)
	b = appendAuditField(b, `,"project":`, r.Project)
	if len(r.Groups) > 0 {
		b = append(b, `,"groups":[`...)
		for i, g := range r.Groups {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendAuditString(b, g)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

// appendAuditField appends a string field that is omitted when empty.
func appendAuditField(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	b = append(b, key...)
	return appendAuditString(b, s)
}

// appendHMACMap appends m as a JSON object with its keys sorted, as
// encoding/json writes a map.
func appendHMACMap(b []byte, m map[string]string) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendAuditString(b, k)
		b = append(b, ':')
		b = appendAuditString(b, m[k])
	}
	return append(b, '}')
}

// appendAuditString appends s as a JSON string the way encoding/json's
// Marshal does: <, > and & escaped for HTML, control bytes as \b \f \n \r
// \t or \u00XX, invalid UTF-8 as \ufffd, U+2028 and U+2029 escaped.
func appendAuditString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// The "hmacs" object of a serve record: for each value an Env frame sets,
// its name and the hex HMAC under the audit key. Computing it costs an
// HMAC per variable, and a workload is served the same environment many
// times, so the encoded object is kept per workload and env revision
// (which moves whenever what the workload is served changes), with a
// 64-bit seeded hash of the frame's entries beside it: a kept object is
// used only for the very entries it was made from, even if a revision
// were reused. The cache holds at most maxServedHMACBytes (about 5 KB per
// workload of 64 variables; names and HMACs only, never a value) and drops
// entries at random when full.
const maxServedHMACBytes = 4 << 20

type servedHMACs struct {
	mu    sync.Mutex
	m     map[servedKey]*servedEntry
	bytes int
}

type servedKey struct {
	id     string
	envRev int64
}

type servedEntry struct {
	digest uint64
	json   []byte // never modified once made: readers share it
}

// servedSeed keys the digests; it is random per process.
var servedSeed = maphash.MakeSeed()

// servedJSON returns the "hmacs" object of a serve of frame (an encoded Env
// frame, header included) to workload id at env revision envRev; nil when
// the frame sets no value, when it does not decode, or when there is no
// audit output to write it to. The caller must not modify the result.
func (l *auditLog) servedJSON(id string, envRev int64, frame []byte) []byte {
	if l == nil || l.key == nil || l.q == nil || len(frame) < wire.HeaderSize+8 {
		return nil
	}
	digest := maphash.Bytes(servedSeed, frame[wire.HeaderSize+8:]) // the entries, not the revision
	k := servedKey{id, envRev}
	c := &l.served
	c.mu.Lock()
	if e := c.m[k]; e != nil && e.digest == digest {
		c.mu.Unlock()
		return e.json
	}
	c.mu.Unlock()
	js := l.frameHMACsJSON(frame)
	c.put(k, &servedEntry{digest, js})
	return js
}

// servedCost is what an entry counts against maxServedHMACBytes: its
// object, its id and the map's and struct's overhead.
func servedCost(k servedKey, e *servedEntry) int { return len(e.json) + len(k.id) + 96 }

func (c *servedHMACs) put(k servedKey, e *servedEntry) {
	n := servedCost(k, e)
	if n > maxServedHMACBytes/4 {
		return // a huge environment: computed each time rather than crowding out the rest
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[servedKey]*servedEntry{}
	}
	if old := c.m[k]; old != nil {
		c.bytes -= servedCost(k, old)
		delete(c.m, k)
	}
	for x, old := range c.m { // map order is random: evict whatever comes first
		if c.bytes+n <= maxServedHMACBytes {
			break
		}
		c.bytes -= servedCost(x, old)
		delete(c.m, x)
	}
	c.m[k] = e
	c.bytes += n
}

// frameHMACsJSON computes the "hmacs" object of an Env frame: names
// sorted, as json.Marshal writes a map (a name given twice keeps its last
// value, as a map would); unset entries carry no value and are left out.
func (l *auditLog) frameHMACsJSON(frame []byte) []byte {
	_, entries, err := wire.DecodeEnv(frame[wire.HeaderSize:])
	if err != nil {
		return nil
	}
	set := entries[:0]
	for _, e := range entries {
		if !e.Unset {
			set = append(set, e)
		}
	}
	if len(set) == 0 {
		return nil
	}
	if !sort.SliceIsSorted(set, func(i, j int) bool { return set[i].Name < set[j].Name }) {
		sort.SliceStable(set, func(i, j int) bool { return set[i].Name < set[j].Name })
	}
	size := 2
	for _, e := range set {
		size += len(e.Name) + 2*sha256.Size + 8
	}
	b := make([]byte, 0, size)
	b = append(b, '{')
	m := l.keyed()
	defer l.macMu.Unlock()
	var sum [sha256.Size]byte
	first := true
	for i, e := range set {
		if i+1 < len(set) && set[i+1].Name == e.Name {
			continue // the later one wins
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendAuditString(b, e.Name)
		m.Reset() // reuses the keyed state: no key schedule per value
		m.Write(e.Value)
		b = append(b, ':', '"')
		b = hex.AppendEncode(b, m.Sum(sum[:0]))
		b = append(b, '"')
	}
	m.Write(zeroBlock[:]) // the hash's block buffer held the last value's tail
	return append(b, '}')
}
