package agent

import (
	"context"
	"os"
	"strings"
	"time"

	"github.com/envlet/envlet/agent/api"
	"github.com/envlet/envlet/fetch"
)

// Dated records (issue 12 §3): every stored thing (a variable, a secret, a
// group, a project, an API registration) has, beside its record K, a
// record d/K holding when K was created and last written and by whom
// (api.Dated, JSON, sealed with aad "d/K" like every record). commit adds
// the d/K writes to every transaction (dateTxn), so no planner of ops.go
// knows about them.
//
// Why a record of its own rather than fields inside K: a variable's
// plaintext goes from locked memory straight into the served frame
// (envFrame), so dates inside it would be one more thing to skip on the
// serve path; a registration is parsed strictly, so an agent of the
// previous version would refuse a registration with new fields, and would
// serve a variable with a trailer as part of its value. An older agent
// sharing an etcd store logs d/ records as unknown and ignores them.
//
// A record written before dates were kept has no d/K: it shows no dates
// (not a made-up one) until its next write, which sets updated_at and
// updated_by and leaves created_at unknown. Deleting K deletes d/K.

// keyDated is the key of the dates of record key.
func keyDated(key string) string { return "d/" + key }

// dateLayout is how dates are written: RFC 3339, UTC, whole seconds.
const dateLayout = time.RFC3339

// isDated says whether record key is a stored thing that carries dates
// (not the account index record, nor a d/ record itself).
func isDated(key string) bool {
	switch {
	case strings.HasPrefix(key, "u/"):
		return strings.Contains(key[2:], "/v/")
	case strings.HasPrefix(key, "p/"), strings.HasPrefix(key, "g/"), strings.HasPrefix(key, "s/"), strings.HasPrefix(key, "w/"):
		return true
	}
	return false
}

// actorOf is the user a change is made by: the admin API's caller, or ""
// for a change the agent makes of itself.
func actorOf(ctx context.Context) string {
	if c, _ := ctx.Value(ctxKey{}).(*caller); c != nil {
		return c.user
	}
	return ""
}

// txnOpsBudget is how many operations dateTxn lets a transaction reach:
// etcd's default --max-txn-ops. Dates past it are committed just after
// the change (commitLateDates), so dating a change never makes it too big
// for etcd where it was not before: deleting all of a user's 64 account
// variables is 65 operations, 129 with their dates.
const txnOpsBudget = 128

// dateTxn adds to txn, for every put of a dated record, a put of its
// dates: created_at kept from the record's dates when it exists already
// (unknown for a record older than dates), now when it is new; updated_at
// now and updated_by by. A delete of a dated record deletes its dates.
// Puts go first, then deletes, while txn stays within txnOpsBudget; the
// rest is returned, to commit after txn. Called with a.mu held for
// reading, on the model txn was built from; the record's own condition (or
// commit's writeMu) already guards the dates, which need none of their own.
func (a *Agent) dateTxn(m *model, txn *fetch.Txn, by string, now time.Time) (late []fetch.Op) {
	stamp := now.UTC().Format(dateLayout)
	var puts, dels []fetch.Op
	for _, op := range txn.Ops {
		if !isDated(op.Key) {
			continue
		}
		dk := keyDated(op.Key)
		old, had := m.dates[op.Key]
		if op.Delete {
			if had {
				dels = append(dels, fetch.Op{Key: dk, Delete: true})
			}
			continue
		}
		d := api.Dated{CreatedAt: stamp, UpdatedAt: stamp, UpdatedBy: by}
		if m.recordRev(op.Key) != 0 {
			d.CreatedAt = old.CreatedAt // "" for a record older than dates
		}
		puts = append(puts, fetch.Op{Key: dk, Value: a.sealJSON(dk, d)})
	}
	for _, op := range append(puts, dels...) {
		if len(txn.Ops) < txnOpsBudget {
			txn.Ops = append(txn.Ops, op)
		} else {
			late = append(late, op)
		}
	}
	return late
}

// commitLateDates commits the dates dateTxn could not fit in a change
// committed at rev, in transactions within txnOpsBudget, and waits for
// them. It returns the revision the caller's next read must see. A failure
// is logged, not returned: the change itself is committed; a date it
// leaves behind is only stale (a put) or an orphan that nothing shows (a
// delete: the dates of an absent record are never listed, and a new record
// under that key is dated afresh).
func (a *Agent) commitLateDates(ctx context.Context, rev fetch.Revision, late []fetch.Op) fetch.Revision {
	for len(late) > 0 {
		n := min(len(late), txnOpsBudget)
		r, err := a.backend.Commit(ctx, fetch.Txn{Ops: late[:n]})
		if err == nil {
			err = a.waitRev(ctx, r)
		}
		if err != nil {
			a.log.Warn("dates of a committed change not written", "records", len(late), "error", err)
			return rev
		}
		rev, late = r, late[n:]
	}
	return rev
}

// recordRev is the revision of the record under key as the model holds
// it, 0 when it does not exist.
func (m *model) recordRev(key string) fetch.Revision {
	parts := strings.Split(key, "/")
	rev := func(set varSet, name string) fetch.Revision {
		if v := set[name]; v != nil {
			return v.rev
		}
		return 0
	}
	switch {
	case len(parts) == 4 && parts[0] == "u" && parts[2] == "v":
		if u := m.users[parts[1]]; u != nil {
			return rev(u.vars, parts[3])
		}
	case len(parts) == 3 && parts[0] == "p" && parts[2] == "meta":
		if p := m.projects[parts[1]]; p != nil {
			return p.metaRev
		}
	case len(parts) == 4 && parts[0] == "p" && parts[2] == "v":
		if p := m.projects[parts[1]]; p != nil {
			return rev(p.vars, parts[3])
		}
	case len(parts) == 3 && parts[0] == "g" && parts[2] == "meta":
		if g := m.groups[parts[1]]; g != nil {
			return g.metaRev
		}
	case len(parts) == 4 && parts[0] == "g" && parts[2] == "v":
		if g := m.groups[parts[1]]; g != nil {
			return rev(g.vars, parts[3])
		}
	case len(parts) == 4 && parts[0] == "s" && parts[1] == "u":
		return rev(m.userSecrets[parts[2]], parts[3])
	case len(parts) == 4 && parts[0] == "s" && parts[1] == "p":
		return rev(m.projSecrets[parts[2]], parts[3])
	case len(parts) == 2 && parts[0] == "w":
		return m.workloads[parts[1]]
	}
	return 0
}

// applyDated folds a d/ record into the model. Dates touch no workload.
// A record that does not open is logged and skipped, as in apply.
func (a *Agent) applyDated(ev fetch.Event) {
	key := strings.TrimPrefix(ev.Key, "d/")
	if ev.Deleted {
		delete(a.model.dates, key)
		return
	}
	var d api.Dated
	if err := a.openMeta(ev.Key, ev.Value, &d); err != nil {
		a.log.Error("skipping a record that does not open", "key", ev.Key, "error", err)
		return
	}
	a.model.dates[key] = d
}

// stampVars sets the dates of each listed variable, whose record key is
// keyOf(name). Called with a.mu held.
func (m *model) stampVars(out []varJSON, keyOf func(name string) string) []varJSON {
	for i := range out {
		out[i].Dated = m.dates[keyOf(out[i].Name)]
	}
	return out
}

// fileUpdater is updated_by of a workloads.d registration: it is not a
// stored record and no admin API caller wrote it, so no user name fits;
// the parentheses keep it apart from every valid user name.
const fileUpdater = "(workloads.d)"

// fileDates are the dates of a workloads.d registration: updated_at the
// file's modification time (when it was last written), updated_by
// fileUpdater, created_at unknown; none when the file cannot be read.
func fileDates(path string) api.Dated {
	fi, err := os.Lstat(path)
	if err != nil {
		return api.Dated{}
	}
	return api.Dated{UpdatedAt: fi.ModTime().UTC().Format(dateLayout), UpdatedBy: fileUpdater}
}

// runDates are the dates of an `envlet run` registration (kept in memory
// only, for the run's life): made now by its user.
func runDates(user string, now time.Time) api.Dated {
	stamp := now.UTC().Format(dateLayout)
	return api.Dated{CreatedAt: stamp, UpdatedAt: stamp, UpdatedBy: user}
}

// workloadDates is a registration's dates: an API one's from its d/
// record, another's (workloads.d, a run) from the workload. Called with
// a.mu held.
func (a *Agent) workloadDates(id string, w *workload) api.Dated {
	if w.source == sourceAPI {
		return a.model.dates[keyWorkload(id)]
	}
	return w.dates
}
