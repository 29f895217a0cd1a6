package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// stubRequest is what the stub agent saw of one request.
type stubRequest struct {
	Method string
	Path   string // escaped, as sent
	Query  string // raw
	Body   string
}

// stub is a stand-in for the agent's admin API on a real Unix socket: it
// records every request and answers each with the same canned reply.
type stub struct {
	socket string
	status int
	reply  string
	hijack bool // close the connection without answering

	mu   sync.Mutex
	reqs []stubRequest
}

// shortTempDir is a temp dir whose socket paths fit in sun_path (108 bytes);
// t.TempDir() can be too long.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "el")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func startStub(t *testing.T, status int, reply string) *stub {
	t.Helper()
	s := &stub{socket: filepath.Join(shortTempDir(t), "admin.sock"), status: status, reply: reply}
	ln, err := net.Listen("unix", s.socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: s}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *stub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.reqs = append(s.reqs, stubRequest{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, Body: string(body)})
	s.mu.Unlock()
	if s.hijack {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	}
	if s.reply != "" {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(s.status)
	io.WriteString(w, s.reply)
}

func (s *stub) requests() []stubRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]stubRequest(nil), s.reqs...)
}

// runCLI runs the CLI in-process: through run when stdin is "", else
// through runIO with stdin.
func runCLI(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	if stdin == "" {
		code = run(context.Background(), args, &out, &errOut)
	} else {
		code = runIO(context.Background(), args, strings.NewReader(stdin), &out, &errOut)
	}
	return out.String(), errOut.String(), code
}
