package agent

import (
	"fmt"
	"net/http"
	"time"

	"github.com/envlet/envlet/agent/api"
	"github.com/envlet/envlet/agent/internal/selfrun"
)

// Self-service runs (`envlet run`, POST /v1/runs): a user registers a
// workload for their own uid, under their own user name, in a project they
// are a member of, with execution variables of their own, and holds it
// for as long as the admin connection that asked for it stays open.
//
// The registration matches the caller's uid and a token the agent issues
// (token_dir/ID, owned by that uid, mode 0400): no other uid can be
// served it, and the caller's other registrations (uid-only ones) are not
// disturbed, since a peer that presents a token is matched only against
// registrations that ask for one. It is kept in memory only (source
// "run"): nothing is written to the store, so nothing can be left there.
//
// The reply is a stream of JSON lines: api.RunStarted once the
// registration is in place, then, once it is gone, api.RunEnded. It ends
// when the client closes its side of the connection (the CLI does so once
// the program exits) or the connection breaks (the CLI was killed, even
// with SIGKILL: the kernel closes its socket), or when the agent stops.
// Each user holds at most max_runs_per_user runs (RUN_LIMIT_EXCEEDED).

// sourceRun marks a run's registration in `workload list`.
const sourceRun = "run"

// serveRun is the handler of POST /v1/runs. It is a plain http handler,
// not an admin handler func: its reply outlives the request.
func (a *Agent) serveRun(w http.ResponseWriter, r *http.Request) {
	c, _ := r.Context().Value(ctxKey{}).(*caller)
	if c == nil {
		writeErr(w, errorf(CodeDenied, "the caller's credentials could not be read"))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	r, wipes := withWipes(r)
	defer wipes.wipe()
	started, release, err := a.startRun(r, c)
	wipes.wipe() // the execution values are in locked memory now, or refused
	if err != nil {
		e := codeOf(err)
		if e.Code == CodeInternal {
			a.log.Error("start a run", "user", c.user, "error", err)
			e = &Error{Code: CodeInternal, Message: "internal error; see the agent log"}
		}
		if e.Code == CodeDenied || e.Code == CodeRunLimit {
			a.audit.write(auditRecord{Action: "refuse", Code: e.Code, Reason: e.Message, Request: r.Method + " " + r.URL.Path, Socket: "admin"}, &c.peer, c.user)
		}
		writeErr(w, e)
		return
	}
	defer release()
	rc := http.NewResponseController(w)
	// The reply lasts as long as the run: no write deadline for it.
	rc.SetWriteDeadline(time.Time{})
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusCreated)
	writeJSONLine(w, started)
	rc.Flush()

	ended, forget := a.runs.Track(started.ID)
	defer forget()
	why := "the client closed the connection"
	select {
	case <-r.Context().Done():
	case <-a.runs.Stopping():
		why = "the agent is stopping"
	case <-ended:
		why = "an admin deleted it"
	}
	a.endRun(started, c, why)
	writeJSONLine(w, api.RunEnded{ID: started.ID, Ended: true})
	rc.Flush()
}

func writeJSONLine(w http.ResponseWriter, v any) {
	writeJSONLocked(bodyPool, w, v, false) // ids and paths, no values
	w.Write([]byte("\n"))
}

// startRun checks a run request and registers the run. It returns what
// the client is told and the release of the caller's run slot.
func (a *Agent) startRun(r *http.Request, c *caller) (api.RunStarted, func(), error) {
	var req api.RunRequest
	if err := decodeBody(r, &req); err != nil {
		return api.RunStarted{}, nil, err
	}
	if !validIdent(req.Project) {
		return api.RunStarted{}, nil, errorf(CodeInvalidRequest, "a run needs a project (--project P) you are a member of")
	}
	if !validIdent(c.user) {
		return api.RunStarted{}, nil, errorf(CodeDenied, "the caller's user name %q cannot own a registration", clipIdent(c.user))
	}
	if err := a.checkExecution(req.Execution); err != nil { // admin_views.go
		return api.RunStarted{}, nil, err
	}
	a.mu.RLock()
	p := a.model.liveProject(req.Project)
	member := p != nil && p.isMember(c.user)
	a.mu.RUnlock()
	if !member && !(c.admin && p != nil) {
		// As everywhere: a project that does not exist is refused as one
		// the caller is not in, so the reply does not tell which exist.
		return api.RunStarted{}, nil, errorf(CodeDenied, "%s is not a member of project %s", c.user, req.Project)
	}
	release, ok := a.runs.Acquire(c.user)
	if !ok {
		return api.RunStarted{}, nil, errorf(CodeRunLimit, "%s holds %d runs already, the most allowed at once (max_runs_per_user = %d); wait for one to end",
			c.user, a.runs.Held(c.user), a.runs.Max())
	}
	uid := c.peer.uid
	reg := &Registration{
		ID: selfrun.NewID(c.user), User: c.user, Project: req.Project,
		Match:     Match{UID: &uid, Token: true},
		Execution: req.Execution,
	}
	reg.wipe = valueStrings(reg)
	a.mu.Lock()
	if a.workloads[reg.ID] != nil {
		a.mu.Unlock()
		release()
		return api.RunStarted{}, nil, errorf(CodeWorkloadExists, "workload %s is already registered; try again", reg.ID)
	}
	err := a.putWorkload(reg, sourceRun)
	var tokenFile string
	if w := a.workloads[reg.ID]; err == nil && w != nil {
		tokenFile = w.tokenFile
		w.dates = runDates(c.user, time.Now()) // dated.go
	}
	a.mu.Unlock()
	if err != nil {
		release()
		return api.RunStarted{}, nil, fmt.Errorf("register run %s: %w", reg.ID, err)
	}
	a.audit.write(auditRecord{Action: "run", Scope: "workload:" + reg.ID, Workload: reg.ID, Socket: "admin",
		WorkloadUser: reg.User, Project: reg.Project}, &c.peer, c.user)
	a.log.Info("run started", "workload", reg.ID, "user", reg.User, "project", reg.Project, "uid", uid)
	return api.RunStarted{ID: reg.ID, User: reg.User, Project: reg.Project, UID: uid, TokenFile: tokenFile, Socket: a.cfg.WorkloadSocket}, release, nil
}

// endRunByAdmin ends run id for DELETE /v1/workloads/{id}: false when id
// is no run. It returns once the registration is gone.
func (a *Agent) endRunByAdmin(id string) bool {
	a.mu.RLock()
	w := a.workloads[id]
	isRun := w != nil && w.source == sourceRun
	a.mu.RUnlock()
	if !isRun || !a.runs.End(id) {
		return false
	}
	a.mu.Lock() // endRun may not have run yet: remove it here (a no-op after)
	a.removeWorkload(id, sourceRun)
	a.mu.Unlock()
	return true
}

// endRun removes a run's registration, its token file, mount and watchers.
func (a *Agent) endRun(run api.RunStarted, c *caller, why string) {
	a.mu.Lock()
	a.removeWorkload(run.ID, sourceRun) // a no-op when an admin's delete got there first
	a.mu.Unlock()
	a.audit.write(auditRecord{Action: "run-end", Scope: "workload:" + run.ID, Workload: run.ID, Reason: why, Socket: "admin",
		WorkloadUser: run.User, Project: run.Project}, &c.peer, c.user)
	a.log.Info("run ended", "workload", run.ID, "why", why)
}
