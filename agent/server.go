package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/envlet/envlet/agent/wire"
)

// requestTimeout bounds a whole exchange on the workload socket, so a peer
// that connects and sends nothing cannot hold a connection.
const requestTimeout = 5 * time.Second

// serveWorkloads answers the workload protocol (agent/wire): one request per
// connection, the peer identified by the kernel.
func (a *Agent) serveWorkloads(ctx context.Context, l *net.UnixListener) error {
	go func() { <-ctx.Done(); l.Close() }()
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accept on workload socket: %w", err)
		}
		go a.serveWorkload(c)
	}
}

func (a *Agent) serveWorkload(c *net.UnixConn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(requestTimeout))
	p, err := peerOf(c)
	if err != nil {
		a.log.Warn("workload connection without credentials", "error", err)
		return
	}
	var buf [2048]byte
	t, payload, err := wire.ReadFrame(c, buf[:])
	if err != nil {
		a.refuse(c, p, CodeBadRequest, "read request: "+err.Error())
		return
	}
	req, err := wire.DecodeRequest(t, payload)
	if err != nil {
		a.refuse(c, p, CodeBadRequest, "decode request: "+err.Error())
		return
	}
	switch req.Type {
	case wire.TypeGetEnv:
		a.sendEnv(c, p)
	case wire.TypeGetSecret:
		a.serveSecret(c, p, req)
	case wire.TypeWatch:
		a.serveWatch(c, p, req)
	default:
		a.refuse(c, p, CodeBadRequest, "unexpected request type "+req.Type.String())
	}
}

// match finds the one registration this peer is. Called with a.mu held.
func (a *Agent) match(p peer) (*workload, *Error) {
	var found *workload
	n := 0
	for _, w := range a.workloads {
		if w.reg.Match.matches(p) {
			n++
			if found == nil || w.reg.ID < found.reg.ID {
				found = w
			}
		}
	}
	switch n {
	case 0:
		return nil, errorf(CodeWorkloadUnknown, "no workload is registered for uid %d gid %d", p.uid, p.gid)
	case 1:
		return found, nil
	}
	return nil, errorf(CodeWorkloadAmbiguous, "%d workloads match uid %d gid %d; a registration must match exactly one", n, p.uid, p.gid)
}

func (a *Agent) sendEnv(c *net.UnixConn, p peer) {
	a.mu.RLock()
	w, e := a.match(p)
	if e != nil {
		a.mu.RUnlock()
		a.refuse(c, p, e.Code, e.Message)
		return
	}
	// Serve a copy, so a re-resolution may free the frame while we write.
	frame := a.pool.Copy(w.frame.Bytes())
	rev := a.model.rev
	w.servedRev.Store(int64(rev))
	id := w.reg.ID
	a.mu.RUnlock()
	defer frame.Free()
	if _, err := c.Write(frame.Bytes()); err != nil {
		a.log.Debug("write env", "workload", id, "error", err)
		return
	}
	a.audit.write(auditRecord{Action: "serve", Workload: id, Revision: int64(rev), Socket: "workload"}, &p, "")
	a.log.Debug("served", "workload", id, "revision", rev, "pid", p.pid)
}

// refuse answers with an Error frame, logs and audits the refusal.
func (a *Agent) refuse(c *net.UnixConn, p peer, code, msg string) {
	c.Write(wire.AppendError(nil, code, msg))
	a.log.Info("refused", "code", code, "reason", msg, "pid", p.pid, "uid", p.uid)
	a.audit.write(auditRecord{Action: "refuse", Code: code, Reason: msg, Socket: "workload"}, &p, "")
}
