package agent

import (
	"encoding/base64"
	"net"

	"github.com/envlet/envlet/agent/wire"
)

// serveSecret answers GetSecret: the secret the calling workload may read
// under that name — its user's private one when the user is a member of
// the workload's project, else the project's (secretFor). A text secret is
// sent as stored; a file secret as the file's bytes (decoded from base64).
// A name the workload cannot read is refused with ENV_VAR_NOT_FOUND and
// audited; a served secret is audited with the HMAC of its stored value.
func (a *Agent) serveSecret(c *net.UnixConn, p peer, req wire.Request) {
	if !validVarName(req.Name) {
		a.refuse(c, p, CodeInvalidName, "invalid secret name")
		return
	}
	a.awaitEngine(p)
	a.mu.RLock()
	w, e := a.match(p)
	if e != nil {
		a.mu.RUnlock()
		a.refuse(c, p, e.Code, e.Message)
		return
	}
	id, user, project := w.reg.ID, w.reg.User, w.reg.Project
	v, scope := a.secretFor(user, project, req.Name)
	if v == nil {
		a.mu.RUnlock()
		a.refuse(c, p, CodeNotFound, "workload "+id+" has no secret "+req.Name+" (neither a private one of "+user+" as a member of "+project+", nor one of project "+project+")")
		return
	}
	stored := v.value()
	sum := a.audit.sum(stored)
	rev := a.model.rev
	var frame []byte
	buf := a.pool.Alloc(wire.HeaderSize + 4 + len(stored))
	defer buf.Free()
	if v.file() {
		// checkSecret let only valid base64 in, so this cannot fail.
		dec := a.pool.Alloc(base64.StdEncoding.DecodedLen(len(stored)))
		n, err := base64.StdEncoding.Decode(dec.Bytes(), stored)
		if err == nil {
			frame = wire.AppendSecret(buf.Bytes()[:0], dec.Bytes()[:n])
		}
		dec.Free()
	} else {
		frame = wire.AppendSecret(buf.Bytes()[:0], stored)
	}
	a.mu.RUnlock()
	if frame == nil {
		a.refuse(c, p, CodeInternal, "secret "+req.Name+" of "+scope+" does not decode")
		return
	}
	if _, err := c.Write(frame); err != nil {
		a.log.Debug("write secret", "workload", id, "error", err)
		return
	}
	a.audit.write(auditRecord{Action: "serve", Scope: scope, Name: req.Name, Workload: id, Revision: int64(rev),
		HMACs: map[string]string{req.Name: sum}, Socket: "workload", WorkloadUser: user, Project: project}, &p, a.recordName(p.uid))
	a.log.Debug("served secret", "workload", id, "name", req.Name, "scope", scope, "pid", p.pid)
}
