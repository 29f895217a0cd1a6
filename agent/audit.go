package agent

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/hashicorp/go-hclog"

	"github.com/envlet/envlet/agent/wire"
	"github.com/envlet/envlet/cache"
)

// auditLog writes one JSON line per event: who changed which name in which
// scope, which workload was served which revision, every refusal. Names
// only, never a value: a value written or served appears as its
// HMAC-SHA256 under the install's audit key, so an operator who holds a
// value can find where it went (POST /v1/audit/hmac) while the log itself
// reveals nothing.
//
// Lines are written by one goroutine (auditQueue): whatever accumulated
// while it wrote the last batch goes out in one write(2), so under load a
// serve costs an append to a buffer, and when idle a line is written at
// once. A serve record is queued and not waited for (the peer has its
// reply already); every other record waits until it is written, so an
// admin change or a refusal is in the file by the time the caller hears
// of it. Close writes what is queued.
type auditLog struct {
	f       *os.File
	key     *cache.Buf // the audit key, in locked memory
	journal bool       // also send each line to journald
	q       *auditQueue
	log     hclog.Logger // where a failed write is reported; nil: nowhere

	// One keyed HMAC, made on first use and Reset for each sum: a new one
	// per call would leave a copy of the key (its pads) in the heap each
	// time.
	macMu sync.Mutex
	mac   hash.Hash

	served servedHMACs // the "hmacs" of recent serves, by workload and env revision

	closeOnce sync.Once
}

// keyed returns the audit log's HMAC, reset, with macMu held; the caller
// unlocks it.
func (l *auditLog) keyed() hash.Hash {
	l.macMu.Lock()
	if l.mac == nil {
		l.mac = hmac.New(sha256.New, l.key.Bytes())
	}
	l.mac.Reset()
	return l.mac
}

// auditKeySize is the length of the audit key: 32 random bytes.
const auditKeySize = 32

// auditRecord is one line. Fields left empty are omitted.
type auditRecord struct {
	Time       string            `json:"time"`
	Action     string            `json:"action"` // create, set, update, delete, delete-all, reveal, serve, refuse, register, deregister, assign, unassign, …
	UID        *int64            `json:"uid,omitempty"`
	User       string            `json:"user,omitempty"`
	PID        int32             `json:"pid,omitempty"`
	Scope      string            `json:"scope,omitempty"` // user:alice, project:fraud, group:base, secret:user:alice, secret:project:fraud, workload:train-42
	Name       string            `json:"name,omitempty"`
	Workload   string            `json:"workload,omitempty"`
	Revision   int64             `json:"revision,omitempty"`
	FromSecret string            `json:"from_secret,omitempty"` // a variable written to take its value from this secret
	HMAC       string            `json:"hmac,omitempty"`        // of the value written
	HMACs      map[string]string `json:"hmacs,omitempty"`       // name -> HMAC of each value served
	hmacsJSON  []byte            // HMACs already encoded (an object); used instead of HMACs when set
	Code       string            `json:"code,omitempty"`
	Reason     string            `json:"reason,omitempty"`
	Request    string            `json:"request,omitempty"` // METHOD PATH of a refused admin request
	Socket     string            `json:"socket,omitempty"`

	// The workload's user and project, and the groups merged into what it
	// was served (serve, register, run records): who got what, by project.
	WorkloadUser string   `json:"workload_user,omitempty"`
	Project      string   `json:"project,omitempty"`
	Groups       []string `json:"groups,omitempty"`
}

// openAudit opens the audit log at path (none when empty) and loads the
// audit key from keyPath, creating it on first start.
func openAudit(path, keyPath string, pool *cache.Pool) (*auditLog, error) {
	key, err := loadAuditKey(keyPath, pool)
	if err != nil {
		return nil, err
	}
	l := &auditLog{key: key, journal: journal.Enabled()}
	if path != "" {
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			key.Free()
			return nil, fmt.Errorf("create audit dir: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			key.Free()
			return nil, fmt.Errorf("open audit log: %w", err)
		}
		l.f = f
	}
	if l.f != nil || l.journal {
		l.q = newAuditQueue(l)
	}
	return l, nil
}

// loadAuditKey reads the 32-byte audit key, or creates it (mode 0600) when
// the file does not exist. A key readable by group or others is refused:
// with it anyone could test guesses against the log's HMACs.
func loadAuditKey(path string, pool *cache.Pool) (*cache.Buf, error) {
	f, err := os.OpenFile(path, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return createAuditKey(path, pool)
	}
	if err != nil {
		return nil, fmt.Errorf("open audit key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat audit key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("audit key %s is mode %04o; it must not be readable by group or others (chmod 600)", path, fi.Mode().Perm())
	}
	buf := pool.Alloc(auditKeySize)
	if _, err := io.ReadFull(f, buf.Bytes()); err != nil || fi.Size() != auditKeySize {
		buf.Free()
		return nil, fmt.Errorf("audit key %s: want exactly %d bytes, it holds %d", path, auditKeySize, fi.Size())
	}
	return buf, nil
}

func createAuditKey(path string, pool *cache.Pool) (*cache.Buf, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create audit key dir: %w", err)
	}
	buf := pool.Alloc(auditKeySize)
	if _, err := rand.Read(buf.Bytes()); err != nil {
		buf.Free()
		return nil, fmt.Errorf("generate audit key: %w", err)
	}
	// Write a temporary file and link it into place, so two agents starting
	// at once cannot both create a key, and a crash leaves no short key.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".audit.key-*")
	if err != nil {
		buf.Free()
		return nil, fmt.Errorf("create audit key: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.Write(buf.Bytes())
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Link(tmp.Name(), path)
	}
	if errors.Is(werr, os.ErrExist) {
		buf.Free()
		return loadAuditKey(path, pool) // another agent won the race
	}
	if werr != nil {
		buf.Free()
		return nil, fmt.Errorf("write audit key %s: %w", path, werr)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return buf, nil
}

// sum is the hex HMAC-SHA256 of a value under the audit key.
func (l *auditLog) sum(value []byte) string {
	if l == nil || l.key == nil {
		return ""
	}
	m := l.keyed()
	defer l.macMu.Unlock()
	m.Write(value)
	s := hex.EncodeToString(m.Sum(nil))
	m.Write(zeroBlock[:]) // the hash's block buffer held the value's tail
	return s
}

// zeroBlock overwrites a SHA-256 block buffer.
var zeroBlock [sha256.BlockSize]byte

// sums is the HMAC of every value an Env frame sets, by name; unset
// entries carry no value and are left out.
func (l *auditLog) sums(entries []wire.Entry) map[string]string {
	if l == nil || l.key == nil {
		return nil
	}
	out := make(map[string]string, len(entries))
	m := l.keyed()
	defer l.macMu.Unlock()
	var sum [sha256.Size]byte
	for _, e := range entries {
		if !e.Unset {
			m.Reset() // reuses the keyed state: no key schedule per value
			m.Write(e.Value)
			out[e.Name] = hex.EncodeToString(m.Sum(sum[:0]))
		}
	}
	m.Write(zeroBlock[:]) // the hash's block buffer held the last value's tail
	return out
}

// write records r, with the peer's credentials and user name when given.
// A serve record is queued; any other returns once the line is written
// (or the write failed). Without a file or journal it does nothing.
func (l *auditLog) write(r auditRecord, p *peer, who string) {
	if l == nil || l.q == nil {
		return
	}
	r.Time = time.Now().UTC().Format(time.RFC3339Nano)
	if p != nil {
		uid := int64(p.uid)
		r.UID, r.PID = &uid, p.pid
	}
	if who != "" {
		r.User = who
	}
	lb := lineBufs.Get().(*[]byte)
	b := appendAuditJSON((*lb)[:0], &r)
	b = append(b, '\n')
	l.q.put(b, r.Action, r.Action != "serve")
	if cap(b) <= maxPooledLine {
		*lb = b
		lineBufs.Put(lb)
	}
}

// lineBufs holds the buffers records are encoded into before they are
// queued: a serve record of 64 variables is some 5 KB.
var lineBufs = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

const maxPooledLine = 64 << 10

// Close writes what is queued, then closes the file. A record written
// after Close is lost: the agent stops its sockets' handlers first.
func (l *auditLog) Close() error {
	if l == nil {
		return nil
	}
	var err error
	l.closeOnce.Do(func() {
		if l.q != nil {
			l.q.close()
		}
		l.key.Free()
		if l.f != nil {
			err = l.f.Close()
		}
	})
	return err
}
