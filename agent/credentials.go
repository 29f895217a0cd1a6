package agent

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/envlet/envlet/agent/wire"
	"github.com/envlet/envlet/cache"
)

// The credentials socket serves systemd's LoadCredential=ID:/path/to/socket
// (systemd.exec(5)). When a unit starts, the service manager (PID 1, root)
// binds its end of the connection to the abstract address
//
//	\0<random hex>/unit/<unit name>/<credential id>
//
// connects, shuts its write side and reads the credential until EOF. The
// agent reads that address (getpeername), finds the one workload registered
// with match.systemd_unit equal to the unit, writes the value of its
// resolved variable named by the credential id — else the secret of that
// name it may read — and closes. Anything else is refused: the connection
// is closed without data, and the reason logged and audited. (systemd has
// no way to be told "no such credential" over a stream socket: it reads a
// refusal as an empty credential, systemd issue #27373.)

// credentialPeer parses the peer address systemd binds to; ok is false for
// any other address.
func credentialPeer(addr string) (unit, id string, ok bool) {
	// Go shows an abstract address with '@' in place of the NUL byte.
	rest, abstract := strings.CutPrefix(addr, "@")
	if !abstract {
		return "", "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 4 || parts[1] != "unit" || parts[0] == "" || !isLowerHex(parts[0]) || len(parts[0]) > 16 {
		return "", "", false
	}
	unit, id = parts[2], parts[3]
	if !isUnitName(unit) || id == "" || len(id) > 255 || id == "." || id == ".." {
		return "", "", false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x20 || c == 0x7f {
			return "", "", false
		}
	}
	return unit, id, true
}

// serveCredentials answers on the credentials socket until ctx ends.
func (a *Agent) serveCredentials(ctx context.Context, l *net.UnixListener) error {
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
			return fmt.Errorf("accept on credentials socket: %w", err)
		}
		go a.serveCredential(c)
	}
}

func (a *Agent) serveCredential(c *net.UnixConn) {
	a.noteRequest("credentials", "credential") // metrics.go
	defer c.Close()
	c.SetDeadline(time.Now().Add(a.requestTimeout()))
	p, err := peerOf(c)
	if err != nil {
		a.log.Warn("credentials connection without credentials", "error", err)
		return
	}
	addr := ""
	if ra, ok := c.RemoteAddr().(*net.UnixAddr); ok && ra != nil {
		addr = ra.Name
	}
	unit, id, ok := credentialPeer(addr)
	refuse := func(code, reason string) {
		a.noteRefusal("credentials", code) // metrics.go
		a.log.Info("credential refused", "code", code, "reason", reason, "unit", unit, "credential", id, "pid", p.pid, "uid", p.uid)
		a.audit.write(auditRecord{Action: "refuse", Code: code, Reason: reason, Name: id, Socket: "credentials"}, &p, a.recordName(p.uid))
	}
	if p.uid != 0 {
		refuse(CodeDenied, fmt.Sprintf("only root (the service manager) may read credentials; the peer is uid %d", p.uid))
		return
	}
	if !ok {
		refuse(CodeBadRequest, "the peer is not bound to a systemd credential address (@HEX/unit/UNIT/ID)")
		return
	}

	a.mu.RLock()
	var w *workload
	n := 0
	for _, x := range a.workloads {
		if x.reg.Match.SystemdUnit == unit {
			n++
			if w == nil || x.reg.ID < w.reg.ID {
				w = x
			}
		}
	}
	if n != 1 {
		a.mu.RUnlock()
		if n == 0 {
			refuse(CodeWorkloadUnknown, "no workload is registered with systemd_unit "+unit)
		} else {
			refuse(CodeWorkloadAmbiguous, fmt.Sprintf("%d workloads are registered with systemd_unit %s; one may be", n, unit))
		}
		return
	}
	wid := w.reg.ID
	to := a.servedTo(w)
	val, scope, hmac := a.credentialValue(w, id)
	rev := a.model.rev
	if val != nil {
		w.noteServed(rev)
	}
	a.mu.RUnlock()
	if val == nil {
		refuse(CodeNotFound, "workload "+wid+" has no variable or secret named "+id)
		return
	}
	defer val.Free()
	if _, err := c.Write(val.Bytes()); err != nil {
		a.log.Debug("write credential", "workload", wid, "error", err)
		return
	}
	a.audit.write(to.record(auditRecord{Action: "serve", Scope: scope, Name: id, Workload: wid, Revision: int64(rev),
		HMACs: map[string]string{id: hmac}, Socket: "credentials"}), &p, a.recordName(p.uid))
	a.log.Debug("served credential", "workload", wid, "unit", unit, "credential", id, "scope", scope)
}

// credentialValue finds what credential id is for w: the variable of that
// name in its resolved environment, else the secret of that name it may
// read (a file secret as the file's bytes). It returns a copy in locked
// memory, the scope it came from and the audit HMAC of the value; nil when
// there is none. Called with a.mu held.
func (a *Agent) credentialValue(w *workload, id string) (*cache.Buf, string, string) {
	fb := a.envFrame(w)
	defer fb.Free()
	frame := fb.Bytes()
	if len(frame) < wire.HeaderSize {
		return nil, "", ""
	}
	if _, entries, err := wire.DecodeEnv(frame[wire.HeaderSize:]); err == nil {
		for _, e := range entries {
			if e.Name == id && !e.Unset {
				return a.pool.Copy(e.Value), "workload:" + w.reg.ID, a.audit.sum(e.Value)
			}
		}
	}
	if !validVarName(id) {
		return nil, "", ""
	}
	v, scope := a.secretFor(w.reg.User, w.reg.Project, id)
	if v == nil {
		return nil, "", ""
	}
	stored := v.value()
	sum := a.audit.sum(stored)
	if !v.file() {
		return a.pool.Copy(stored), scope, sum
	}
	dec := a.pool.Alloc(base64.StdEncoding.DecodedLen(len(stored)))
	n, err := base64.StdEncoding.Decode(dec.Bytes(), stored)
	if err != nil {
		dec.Free()
		return nil, "", ""
	}
	out := a.pool.Copy(dec.Bytes()[:n])
	dec.Free()
	return out, scope, sum
}
