package agent

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/hashicorp/go-hclog"

	"github.com/envlet/envlet/agent/wire"
	"github.com/envlet/envlet/cache"
	"github.com/envlet/envlet/fetch"
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
	path    string
	fileMu  sync.Mutex // held while f is written, and while reopen swaps it
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

	closeOnce  sync.Once
	stopSignal func() // ends reopenOnSignal
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
	Lost       int64             `json:"lost,omitempty"`        // audit-lost: records that could not be written
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
	l := &auditLog{path: path, key: key, journal: journal.Enabled()}
	if path != "" {
		f, err := openAuditFile(path)
		if err != nil {
			key.Free()
			return nil, err
		}
		l.f = f
	}
	if l.f != nil || l.journal {
		l.q = newAuditQueue(l)
	}
	return l, nil
}

// openAuditFile opens (creating it, and its directory, when missing) the
// audit log for appending.
func openAuditFile(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("create audit dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	return f, nil
}

// append writes b, whole lines, to the end of the file. A write that
// fails (ENOSPC after part of it, say) is cut back off, so the file never
// holds half a record and the next write starts on a line of its own.
// fileMu is held.
func (l *auditLog) append(b []byte) error {
	fi, err := l.f.Stat()
	if err != nil {
		return err
	}
	if _, err := l.f.Write(b); err != nil { // os.File.Write writes it all or says why not
		l.f.Truncate(fi.Size())
		return err
	}
	return nil
}

// reopen opens the audit log's path again and writes every later record
// there: after logrotate has renamed the file (SIGUSR1). The swap happens
// between two batches, so each record is whole in exactly one of the two
// files. If the path cannot be opened the agent keeps the file it has.
func (l *auditLog) reopen() error {
	if l == nil || l.path == "" {
		return nil
	}
	f, err := openAuditFile(l.path)
	if err != nil {
		return err
	}
	l.fileMu.Lock()
	old := l.f
	l.f = f
	l.fileMu.Unlock()
	if old != nil {
		return old.Close()
	}
	return nil
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
// A serve record is queued (nil); any other returns once the line is
// written, with the file's error when it could not be (a full or
// read-only disk). Without a file or journal it does nothing.
func (l *auditLog) write(r auditRecord, p *peer, who string) error {
	if l == nil || l.q == nil {
		return nil
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
	err := l.q.put(b, r.Action, r.Action != "serve")
	if cap(b) <= maxPooledLine {
		*lb = b
		lineBufs.Put(lb)
	}
	return err
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
		if l.stopSignal != nil {
			l.stopSignal()
		}
		if l.q != nil {
			l.q.close()
		}
		l.key.Free()
		l.fileMu.Lock()
		defer l.fileMu.Unlock()
		if l.f != nil {
			err = l.f.Close()
		}
	})
	return err
}

// reopenOnSignal reopens the log on each sig (SIGUSR1: logrotate's
// postrotate) until Close. It is set up before the agent says READY, so
// the signal never meets its default action, which would end the agent.
func (l *auditLog) reopenOnSignal(sig os.Signal) {
	if l == nil || l.path == "" {
		return
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sig)
	stop, done := make(chan struct{}), make(chan struct{})
	l.stopSignal = func() {
		signal.Stop(ch)
		close(stop)
		<-done
	}
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-ch:
			}
			if err := l.reopen(); err != nil {
				l.log.Error("reopen audit log; still writing to the file it had", "path", l.path, "error", err)
			} else {
				l.log.Info("audit log reopened", "path", l.path)
			}
		}
	}()
}

// status is the audit part of `envlet status`: records lost to failed
// writes since start, and the last write error while writes fail.
func (l *auditLog) status(out map[string]any) {
	if l == nil || l.q == nil {
		return
	}
	out["audit_lost_records"] = l.q.lostTotal.Load()
	l.fileMu.Lock()
	defer l.fileMu.Unlock()
	if l.q.lastErr != "" {
		out["audit_error"] = l.q.lastErr
	}
}

// requestKey carries the admin request ("PUT /v1/users/me/env/X") in the
// request's context, for the record a change writes before it is made.
type requestKey struct{}

// auditRevealRequest writes a "reveal-request" record before a request
// that asks to see values in clear (?reveal=1) is served, and refuses it,
// fail closed as a change is, when the record cannot be written: no value
// is shown to a person unrecorded. nil when the request reveals nothing.
func (a *Agent) auditRevealRequest(r *http.Request, c *caller) *Error {
	if !wantReveal(r) {
		return nil
	}
	if err := a.audit.write(auditRecord{Action: "reveal-request", Request: r.Method + " " + r.URL.Path, Socket: "admin"}, &c.peer, c.user); err != nil {
		a.log.Error("reveal refused: its audit record cannot be written", "request", r.Method+" "+r.URL.Path, "path", a.audit.path, "error", err)
		if e := storageError(err, "the audit log ("+a.audit.path+")", "the request was refused because it could not be recorded; nothing was shown"); e != nil {
			return e
		}
		return errorf(CodeInternal, "the audit log cannot be written; nothing was shown")
	}
	return nil
}

// commitAudited commits txn (commit's one call of the backend). A change
// asked through the admin API fails closed on the audit log: a "change"
// record (who, and the request) is written before the change is made, and
// if it cannot be written — a full or read-only disk — the change is
// refused with STORAGE_FULL or STORAGE_READ_ONLY and nothing changes. So
// every change made is in the log, even if the record of its outcome
// (set, delete, …, written once it is made) is lost afterwards. A change
// the store then refuses is recorded as a refusal with its code.
func (a *Agent) commitAudited(ctx context.Context, txn fetch.Txn, first bool) (fetch.Revision, error) {
	c, _ := ctx.Value(ctxKey{}).(*caller)
	req, _ := ctx.Value(requestKey{}).(string)
	if c != nil && first {
		if err := a.audit.write(auditRecord{Action: "change", Request: req, Socket: "admin"}, &c.peer, c.user); err != nil {
			a.log.Error("admin change refused: its audit record cannot be written", "request", req, "path", a.audit.path, "error", err)
			if e := storageError(err, "the audit log ("+a.audit.path+")", "the change was refused because it could not be recorded; nothing was changed"); e != nil {
				return 0, e
			}
			return 0, errorf(CodeInternal, "the audit log cannot be written, so the change was refused; nothing was changed")
		}
	}
	rev, err := a.backend.Commit(ctx, txn)
	if err == nil || errors.Is(err, fetch.ErrConflict) {
		return rev, err
	}
	if e := storageError(err, "the store ("+a.cfg.StateDir+")", "nothing was changed"); e != nil {
		a.log.Error("write refused: the store cannot be written", "state_dir", a.cfg.StateDir, "error", err)
		err = e
	}
	if c != nil {
		code, reason := CodeInternal, "the store did not take the change"
		switch e := (*Error)(nil); {
		case errors.As(err, &e):
			code = e.Code
		case errors.Is(err, fetch.ErrUncertain):
			code, reason = CodeUnavailable, "the store did not confirm the change in time; it may still apply"
		case errors.Is(err, fetch.ErrUnavailable):
			code = CodeUnavailable
		}
		a.audit.write(auditRecord{Action: "refuse", Code: code, Reason: reason, Request: req, Socket: "admin"}, &c.peer, c.user)
	}
	return rev, err
}
