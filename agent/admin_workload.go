package agent

import (
	"context"
	"errors"
	"net/http"

	"github.com/envlet/envlet/agent/api"
	"github.com/envlet/envlet/fetch"
)

// Workload update (PUT /v1/workloads/{id}, `envlet workload update`): the
// per-runtime variables of the product documents are "supplied at create
// or update time". An update replaces runtime, execution and mount of an
// API registration; the workload sees it as it sees any other change: its
// env revision moves when what it receives changes, `workload list` shows
// it stale until it asks again, --watch launchers get Changed, a mount is
// rewritten (or removed, when mount goes false).
//
// id, user, project and match may not change (WORKLOAD_FIELD_IMMUTABLE):
// they say who the workload is and whose variables it reads. Changing
// them in place would hand processes already running under this
// registration another identity's environment — another user's account
// variables, another project's — with no restart and no new token; an
// operator who means that deregisters and registers anew, which revokes
// the token and tells the processes apart. The token stays the same
// across an update, as match does.

func (a *Agent) apiUpdateWorkload(r *http.Request, c *caller) (any, int, error) {
	if !c.admin {
		return nil, 0, errorf(CodeDenied, "only admins update workloads")
	}
	id := r.PathValue("id")
	reg, err := readRegistrationBody(r)
	if err != nil {
		return nil, 0, err
	}
	defer reg.wipeValues() // sealed in the store by then
	if reg.ID != id {
		return nil, 0, errorf(CodeWorkloadImmutable, "the body's id %s is not %s: an id names a registration; register a new one instead", reg.ID, clipIdent(id))
	}
	if err := a.updateWorkload(r.Context(), reg); err != nil {
		return nil, 0, err
	}
	a.audit.write(auditRecord{Action: "update", Scope: "workload:" + reg.ID, Socket: "admin", WorkloadUser: reg.User, Project: reg.Project}, &c.peer, c.user)
	reply := api.Registered{ID: reg.ID}
	a.mu.RLock()
	if w := a.workloads[reg.ID]; w != nil {
		reply.TokenFile = w.tokenFile
	}
	a.mu.RUnlock()
	return reply, 200, nil
}

// readRegistrationBody reads and checks the registration in a request's
// body (POST and PUT /v1/workloads): a registration may not set
// issued_token, only the agent does. The caller wipes its values.
func readRegistrationBody(r *http.Request) (*Registration, error) {
	buf, err := readBody(bodyPool, r.Body, r.ContentLength, maxBodyBytes)
	if errors.Is(err, errBodyBusy) {
		return nil, errorf(CodeBusy, "the agent is reading too many request bodies; retry")
	}
	if err != nil {
		return nil, errorf(CodeInvalidRequest, "request body is over %d bytes", maxBodyBytes)
	}
	forgetRequestBody(r, buf.Bytes())
	reg, err := parseRegistration(buf.Bytes())
	buf.Free()
	if err != nil {
		return nil, err
	}
	if reg.IssuedToken != "" {
		reg.wipeValues()
		return nil, errorf(CodeInvalidRequest, "registration %s: issued_token is set by the agent; ask for a token with \"match\": {\"token\": true}", reg.ID)
	}
	return reg, nil
}

// updateWorkload replaces an API registration's record, keeping its
// issued token; id, user, project and match must be those it has.
func (a *Agent) updateWorkload(ctx context.Context, reg *Registration) error {
	key := keyWorkload(reg.ID)
	_, err := a.commit(ctx, func(m *model) (fetch.Txn, error) {
		w := a.workloads[reg.ID]
		rev, stored := m.workloads[reg.ID]
		switch {
		case w == nil:
			return fetch.Txn{}, errorf(CodeWorkloadNotFound, "workload %s is not registered", reg.ID)
		case w.source == sourceFile:
			return fetch.Txn{}, errorf(CodeInvalidRequest, "workload %s comes from %s; edit the file instead", reg.ID, w.path)
		case w.source == sourceRun:
			return fetch.Txn{}, errorf(CodeInvalidRequest, "workload %s is an `envlet run`; its variables are the run's -e flags", reg.ID)
		case !stored:
			return fetch.Txn{}, errorf(CodeWorkloadNotFound, "workload %s is not registered", reg.ID)
		case w.reg.User != reg.User:
			return fetch.Txn{}, errorf(CodeWorkloadImmutable, "workload %s: user may not change (it is %s); deregister and register anew", reg.ID, w.reg.User)
		case w.reg.Project != reg.Project:
			return fetch.Txn{}, errorf(CodeWorkloadImmutable, "workload %s: project may not change (it is %s); deregister and register anew", reg.ID, w.reg.Project)
		case !sameMatch(&w.reg.Match, &reg.Match):
			return fetch.Txn{}, errorf(CodeWorkloadImmutable, "workload %s: match may not change; deregister and register anew", reg.ID)
		}
		reg.IssuedToken = ""
		if reg.Match.Token && w.token != nil {
			reg.IssuedToken = string(w.token.Bytes())
			reg.wipe = append(reg.wipe, reg.IssuedToken)
		}
		return fetch.Txn{
			Conds: []fetch.Cond{{Key: key, ModRev: rev}},
			Ops:   []fetch.Op{{Key: key, Value: a.sealJSON(key, reg)}},
		}, nil
	})
	return err
}

func sameMatch(x, y *Match) bool {
	eq := func(p, q *uint32) bool { return (p == nil) == (q == nil) && (p == nil || *p == *q) }
	return eq(x.UID, y.UID) && eq(x.GID, y.GID) && x.SystemdUnit == y.SystemdUnit && x.Cgroup == y.Cgroup &&
		x.ContainerID == y.ContainerID && x.Token == y.Token
}
