package agent

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/envlet/envlet/fetch"
)

// Every change is a transaction built from the model under a.mu (read),
// guarded by conditions on the revisions it read, committed, and then
// waited for, so the caller's next read sees it. A conflict (another
// writer got there first: another agent on a shared backend) is retried on
// the newer model.

const commitTries = 5

// commit runs build until its transaction commits. build returns the
// transaction, or an *Error to refuse the change.
//
// Writers first try at once, without writeMu, so the local store can write
// them as one group (one fdatasync for all); each transaction's conditions
// keep them correct, as they do between agents on a shared backend. After
// a conflict the retries hold writeMu, so writers that collide go one at a
// time.
func (a *Agent) commit(ctx context.Context, build func(m *model) (fetch.Txn, error)) (fetch.Revision, error) {
	locked := false
	defer func() {
		if locked {
			a.writeMu.Unlock()
		}
	}()
	for try := 0; ; try++ {
		a.mu.RLock()
		txn, err := build(a.model)
		var late []fetch.Op
		if err == nil {
			late = a.dateTxn(a.model, &txn, actorOf(ctx), time.Now()) // dated.go
		}
		seen := a.model.rev
		a.mu.RUnlock()
		if err != nil {
			return 0, err
		}
		if len(txn.Ops) == 0 {
			return seen, nil
		}
		rev, err := a.commitAudited(ctx, txn, try == 0) // audit.go: fails closed on the audit log
		if errors.Is(err, fetch.ErrConflict) && try < commitTries {
			if !locked {
				a.writeMu.Lock()
				locked = true
			}
			// Wait for the model to move past what we read, then rebuild.
			if werr := a.waitRev(ctx, seen+1); werr != nil {
				return 0, werr
			}
			continue
		}
		if errors.Is(err, fetch.ErrUncertain) {
			a.log.Warn("write not confirmed: the store received it but did not answer in time", "error", err)
			return 0, errorf(CodeUnavailable, "the backend did not confirm the change in time; it may still be applied when the backend recovers: read before you retry")
		}
		if errors.Is(err, fetch.ErrUnavailable) {
			a.log.Warn("write refused: the store is unavailable", "error", err)
			return 0, errorf(CodeUnavailable, "the backend is unavailable; nothing was changed")
		}
		if err != nil {
			return 0, err
		}
		if err := a.waitRev(ctx, rev); err != nil {
			return rev, err
		}
		return a.commitLateDates(ctx, rev, late), nil
	}
}

// sealVar builds the sealed record of a variable: flags, then the value,
// bound to its key.
func (a *Agent) sealVar(key string, value []byte, flags byte) []byte {
	p := a.pool.Alloc(1 + len(value))
	defer p.Free()
	b := p.Bytes()
	b[0] = flags
	copy(b[1:], value)
	return a.keys.Seal(nil, b, key)
}

func (a *Agent) sealJSON(key string, v any) []byte {
	b, err := marshalLocked(a.pool, v) // a registration holds values (wipe.go)
	if err != nil {
		panic("marshal metadata: " + err.Error()) // only our own types reach here
	}
	defer b.Free()
	return a.keys.Seal(nil, b.Bytes(), key)
}

// varWrite says how setAccountVar treats an existing or missing name.
type varWrite int

const (
	writeCreate varWrite = iota // fail if it exists
	writeUpdate                 // fail if it is missing
	writeUpsert
)

func (a *Agent) putAccountVar(ctx context.Context, user, name string, value []byte, flags func(old byte) byte, mode varWrite) (fetch.Revision, error) {
	if err := a.checkName(name); err != nil {
		return 0, err
	}
	if err := a.checkValue(name, value); err != nil {
		return 0, err
	}
	key := keyAcctVar(user, name)
	return a.commit(ctx, func(m *model) (fetch.Txn, error) {
		u := m.users[user]
		var old *variable
		var idxRev fetch.Revision
		count := 0
		if u != nil {
			old, idxRev, count = u.vars[name], u.idxRev, len(u.vars)
		}
		switch {
		case old != nil && mode == writeCreate:
			return fetch.Txn{}, errorf(CodeAlreadyExists, "account variable %s already exists for %s", name, user)
		case old == nil && mode == writeUpdate:
			return fetch.Txn{}, errorf(CodeNotFound, "account variable %s does not exist for %s", name, user)
		}
		// The count has its own check below (the index record); this one
		// is the scope's bytes.
		if err := a.checkGrowth(CodeLimitExceeded, "account variables of "+user, "account_var_limit", 0, 1, old, m.scopeBytes(user, ""), len(value)); err != nil {
			return fetch.Txn{}, err
		}
		switch {
		case old != nil:
			return fetch.Txn{
				Conds: []fetch.Cond{{Key: key, ModRev: old.rev}},
				Ops:   []fetch.Op{{Key: key, Value: a.sealVar(key, value, flags(old.flags()))}},
			}, nil
		}
		if limit := a.accountVarLimit(); count >= limit {
			return fetch.Txn{}, errorf(CodeLimitExceeded, "%s already has %d account variables, the limit", user, limit)
		}
		// The index record serialises creations, so two writers cannot both
		// add the last allowed variable.
		return fetch.Txn{
			Conds: []fetch.Cond{{Key: key}, {Key: keyAcctIdx(user), ModRev: idxRev}},
			Ops: []fetch.Op{
				{Key: key, Value: a.sealVar(key, value, flags(0))},
				{Key: keyAcctIdx(user), Value: a.keys.Seal(nil, nil, keyAcctIdx(user))},
			},
		}, nil
	})
}

// deleteAccountVars deletes the named variables, or all of them when names
// is nil. It returns how many it deleted.
func (a *Agent) deleteAccountVars(ctx context.Context, user string, names []string) (int, error) {
	deleted := 0
	_, err := a.commit(ctx, func(m *model) (fetch.Txn, error) {
		u := m.users[user]
		var txn fetch.Txn
		if names == nil && u != nil {
			names = u.vars.sortedNames()
		}
		deleted = 0
		for _, n := range names {
			var v *variable
			if u != nil {
				v = u.vars[n]
			}
			if v == nil {
				return fetch.Txn{}, errorf(CodeNotFound, "account variable %s does not exist for %s", n, user)
			}
			k := keyAcctVar(user, n)
			txn.Conds = append(txn.Conds, fetch.Cond{Key: k, ModRev: v.rev})
			txn.Ops = append(txn.Ops, fetch.Op{Key: k, Delete: true})
			deleted++
		}
		if deleted > 0 {
			txn.Conds = append(txn.Conds, fetch.Cond{Key: keyAcctIdx(user), ModRev: u.idxRev})
			txn.Ops = append(txn.Ops, fetch.Op{Key: keyAcctIdx(user), Value: a.keys.Seal(nil, nil, keyAcctIdx(user))})
		}
		return txn, nil
	})
	return deleted, err
}

func (a *Agent) createProject(ctx context.Context, name string) error {
	if !validIdent(name) {
		return errorf(CodeInvalidRequest, "invalid project name (1-128 of A-Z a-z 0-9 . _ - @)")
	}
	_, err := a.commit(ctx, func(m *model) (fetch.Txn, error) {
		if m.liveProject(name) != nil {
			return fetch.Txn{}, errorf(CodeProjectExists, "project %s already exists", name)
		}
		k := keyProjMeta(name)
		return fetch.Txn{
			Conds: []fetch.Cond{{Key: k}},
			Ops:   []fetch.Op{{Key: k, Value: a.sealJSON(k, projectMeta{Owners: []string{}, Members: []string{}, Groups: []string{}})}},
		}, nil
	})
	return err
}

// updateProject applies change to a live project's metadata.
func (a *Agent) updateProject(ctx context.Context, name string, change func(*projectMeta) error) error {
	_, err := a.commit(ctx, func(m *model) (fetch.Txn, error) {
		p := m.liveProject(name)
		if p == nil {
			return fetch.Txn{}, errorf(CodeProjectNotFound, "project %s does not exist", name)
		}
		meta := projectMeta{
			Owners:  append([]string{}, p.meta.Owners...),
			Members: append([]string{}, p.meta.Members...),
			Groups:  append([]string{}, p.meta.Groups...),
		}
		if err := change(&meta); err != nil {
			return fetch.Txn{}, err
		}
		sort.Strings(meta.Owners)
		sort.Strings(meta.Members)
		k := keyProjMeta(name)
		return fetch.Txn{
			Conds: []fetch.Cond{{Key: k, ModRev: p.metaRev}},
			Ops:   []fetch.Op{{Key: k, Value: a.sealJSON(k, meta)}},
		}, nil
	})
	return err
}

func (a *Agent) deleteProject(ctx context.Context, name string) error {
	_, err := a.commit(ctx, func(m *model) (fetch.Txn, error) {
		p := m.liveProject(name)
		if p == nil {
			return fetch.Txn{}, errorf(CodeProjectNotFound, "project %s does not exist", name)
		}
		txn := fetch.Txn{Conds: []fetch.Cond{{Key: keyProjMeta(name), ModRev: p.metaRev}}}
		txn.Ops = append(txn.Ops, fetch.Op{Key: keyProjMeta(name), Delete: true})
		for n, v := range p.vars {
			txn.Conds = append(txn.Conds, fetch.Cond{Key: keyProjVar(name, n), ModRev: v.rev})
			txn.Ops = append(txn.Ops, fetch.Op{Key: keyProjVar(name, n), Delete: true})
		}
		// The project's secrets go with it: a project created later under
		// the same name must not find them.
		for n, v := range m.projSecrets[name] {
			txn.Conds = append(txn.Conds, fetch.Cond{Key: keyProjSecret(name, n), ModRev: v.rev})
			txn.Ops = append(txn.Ops, fetch.Op{Key: keyProjSecret(name, n), Delete: true})
		}
		return txn, nil
	})
	return err
}

func (a *Agent) putProjectVar(ctx context.Context, project, name string, value []byte, flags func(old byte) byte) error {
	if err := a.checkName(name); err != nil {
		return err
	}
	if err := a.checkNotProtected(layerProject, name); err != nil {
		return err
	}
	if err := a.checkValue(name, value); err != nil {
		return err
	}
	key := keyProjVar(project, name)
	_, err := a.commit(ctx, func(m *model) (fetch.Txn, error) {
		p := m.liveProject(project)
		if p == nil {
			return fetch.Txn{}, errorf(CodeProjectNotFound, "project %s does not exist", project)
		}
		var rev fetch.Revision
		var old byte
		if v := p.vars[name]; v != nil {
			rev, old = v.rev, v.flags()
		}
		if err := a.checkGrowth(CodeLimitExceeded, "variables of project "+project, "project_var_limit", len(p.vars), a.limits().ProjectVars,
			p.vars[name], m.scopeBytes("", project), len(value)); err != nil {
			return fetch.Txn{}, err
		}
		return fetch.Txn{
			Conds: []fetch.Cond{{Key: keyProjMeta(project), ModRev: p.metaRev}, {Key: key, ModRev: rev}},
			Ops:   []fetch.Op{{Key: key, Value: a.sealVar(key, value, flags(old))}},
		}, nil
	})
	return err
}

func (a *Agent) deleteProjectVar(ctx context.Context, project, name string) error {
	key := keyProjVar(project, name)
	_, err := a.commit(ctx, func(m *model) (fetch.Txn, error) {
		p := m.liveProject(project)
		if p == nil {
			return fetch.Txn{}, errorf(CodeProjectNotFound, "project %s does not exist", project)
		}
		v := p.vars[name]
		if v == nil {
			return fetch.Txn{}, errorf(CodeNotFound, "project variable %s does not exist in %s", name, project)
		}
		return fetch.Txn{
			Conds: []fetch.Cond{{Key: key, ModRev: v.rev}},
			Ops:   []fetch.Op{{Key: key, Delete: true}},
		}, nil
	})
	return err
}

// registerWorkload stores an API registration, sealed: it holds runtime
// and execution values.
func (a *Agent) registerWorkload(ctx context.Context, reg *Registration) error {
	key := keyWorkload(reg.ID)
	_, err := a.commit(ctx, func(m *model) (fetch.Txn, error) {
		if w := a.workloads[reg.ID]; w != nil {
			return fetch.Txn{}, errorf(CodeWorkloadExists, "workload %s is already registered (%s)", reg.ID, w.source)
		}
		return fetch.Txn{
			Conds: []fetch.Cond{{Key: key}},
			Ops:   []fetch.Op{{Key: key, Value: a.sealJSON(key, reg)}},
		}, nil
	})
	return err
}

func (a *Agent) deregisterWorkload(ctx context.Context, id string) error {
	key := keyWorkload(id)
	_, err := a.commit(ctx, func(m *model) (fetch.Txn, error) {
		rev, ok := m.workloads[id]
		if !ok {
			if w := a.workloads[id]; w != nil {
				return fetch.Txn{}, errorf(CodeInvalidRequest, "workload %s comes from %s; remove the file instead", id, w.path)
			}
			return fetch.Txn{}, errorf(CodeWorkloadNotFound, "workload %s is not registered", id)
		}
		return fetch.Txn{
			Conds: []fetch.Cond{{Key: key, ModRev: rev}},
			Ops:   []fetch.Op{{Key: key, Delete: true}},
		}, nil
	})
	return err
}
