package agent

// Hooks that delivery (mounts, --watch launchers) plugs into. Called with
// a.mu held for writing.

// afterResolve runs after w's environment was resolved; changed says
// whether what the workload receives differs from before.
func (a *Agent) afterResolve(w *workload, res []resolved, changed bool) {}

// afterRemove runs before a deregistered workload is freed.
func (a *Agent) afterRemove(w *workload) {}
