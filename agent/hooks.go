package agent

import "github.com/envlet/envlet/fetch"

// Hooks that delivery (mounts, --watch launchers) plugs into. Called with
// a.mu held for writing, so each only hashes, copies and queues: the files
// are written by the mounter's goroutine, the Changed frames by each
// watch's own.

// afterResolve runs after w's environment was resolved; changed says
// whether what the workload receives differs from before.
func (a *Agent) afterResolve(w *workload, res []resolved, changed bool) {
	a.updateMount(w, res)
	if changed {
		a.watchers.notify(w.reg.ID, uint64(w.envRev))
	}
}

// afterRemove runs before a deregistered workload is freed.
func (a *Agent) afterRemove(w *workload) {
	id := w.reg.ID
	if _, ok := a.mounts.state[id]; ok {
		delete(a.mounts.state, id)
		a.mounts.enqueue(&mountJob{id: id, remove: true})
	}
	a.watchers.drop(id)
}

// afterSnapshot runs after the model was rebuilt from a full read of the
// store: a workload that is gone from it was dropped without afterRemove.
func (a *Agent) afterSnapshot() {
	for id := range a.mounts.state {
		if w := a.workloads[id]; w == nil || !w.reg.Mount {
			delete(a.mounts.state, id)
			a.mounts.enqueue(&mountJob{id: id, remove: true})
		}
	}
	for _, id := range a.watchers.ids() {
		if a.workloads[id] == nil {
			a.watchers.drop(id)
		}
	}
}

// sweepMounts queues the removal of what a previous run left in mount_dir
// for workloads that are not registered with a mount now. Run calls it once
// every registration is loaded.
func (a *Agent) sweepMounts() {
	a.mu.RLock()
	keep := map[string]bool{}
	for id, w := range a.workloads {
		if w.reg.Mount {
			keep[id] = true
		}
	}
	a.mu.RUnlock()
	a.mounts.enqueue(&mountJob{keep: keep})
}

// mountServed records that id's mount now holds its environment as of rev:
// for `workload list`, a mount counts as served, so a workload that only
// reads its mount shows its revision and turns stale when a change has not
// reached the mount yet.
func (a *Agent) mountServed(id string, rev fetch.Revision) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if w := a.workloads[id]; w != nil {
		w.noteServed(rev)
	}
}
