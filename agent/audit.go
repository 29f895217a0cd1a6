package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// auditLog writes one JSON line per event: who changed which name in which
// scope, which workload was served which revision, every refusal. Names
// only, never a value.
type auditLog struct {
	mu sync.Mutex
	f  *os.File
}

// auditRecord is one line. Fields left empty are omitted.
type auditRecord struct {
	Time     string `json:"time"`
	Action   string `json:"action"` // create, update, delete, reveal, serve, refuse, register, deregister
	UID      *int64 `json:"uid,omitempty"`
	User     string `json:"user,omitempty"`
	PID      int32  `json:"pid,omitempty"`
	Scope    string `json:"scope,omitempty"` // user:alice, project:fraud, workload:train-42
	Name     string `json:"name,omitempty"`
	Workload string `json:"workload,omitempty"`
	Revision int64  `json:"revision,omitempty"`
	Code     string `json:"code,omitempty"`
	Reason   string `json:"reason,omitempty"`
	Socket   string `json:"socket,omitempty"`
}

func openAudit(path string) (*auditLog, error) {
	if path == "" {
		return &auditLog{}, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("create audit dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	return &auditLog{f: f}, nil
}

func (l *auditLog) write(r auditRecord, p *peer, who string) {
	if l == nil || l.f == nil {
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
	b, err := json.Marshal(r)
	if err != nil {
		return
	}
	b = append(b, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	l.f.Write(b)
}

func (l *auditLog) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	return l.f.Close()
}
