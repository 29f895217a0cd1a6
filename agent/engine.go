package agent

import (
	"context"

	"github.com/envlet/envlet/agent/internal/engine"
)

// Containers registered by the container engine (config container_engine,
// agent/internal/engine): the agent implements engine.Registrar with its
// registration path, under a source of their own, so they neither reach
// the store nor collide with workloads.d.

const sourceEngine = "engine"

// containerLookup is what the workload socket needs of the engine
// follower: a container asking before its create event was applied is
// looked up at once.
type containerLookup interface {
	Lookup(ctx context.Context, id string)
}

// engineWorkloadID is the registration id of a labelled container.
func engineWorkloadID(containerID string) string { return "container-" + containerID }

// PutContainer registers a labelled container by its id.
func (a *Agent) PutContainer(c engine.Container) error {
	r := &Registration{ID: engineWorkloadID(c.ID), User: c.User, Project: c.Project,
		Match: Match{ContainerID: c.ID}, Mount: c.Mount, Runtime: c.Runtime}
	if err := r.check(); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.putWorkload(r, sourceEngine); err != nil {
		return err
	}
	a.log.Info("container registered", "workload", r.ID, "user", c.User, "project", c.Project)
	return nil
}

// RemoveContainer drops a container's registration.
func (a *Agent) RemoveContainer(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if w := a.workloads[engineWorkloadID(id)]; w != nil && w.source == sourceEngine {
		a.removeWorkload(w.reg.ID, sourceEngine)
		a.log.Info("container deregistered", "workload", engineWorkloadID(id))
	}
}

// ReconcileContainers makes the engine's registrations exactly cs.
func (a *Agent) ReconcileContainers(cs []engine.Container) {
	keep := map[string]bool{}
	for _, c := range cs {
		if err := a.PutContainer(c); err != nil {
			a.log.Warn("container not registered", "container", c.ID, "reason", err)
		}
		keep[engineWorkloadID(c.ID)] = true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, w := range a.workloads {
		if w.source == sourceEngine && !keep[id] {
			a.removeWorkload(id, sourceEngine)
			a.log.Info("container deregistered", "workload", id)
		}
	}
}

// awaitEngine looks up the container a peer runs in, when an engine is
// followed, so that its registration is in before the peer is matched.
// Called without a.mu held.
func (a *Agent) awaitEngine(p peer) {
	if a.engine == nil {
		return
	}
	if cg, err := p.cgroup(); err == nil && cg.containerID != "" {
		a.engine.Lookup(context.Background(), cg.containerID)
	}
}

// startEngine returns the part of Run that follows the engine, nil when
// none is configured; an engine socket not owned by root is refused here.
func (a *Agent) startEngine() (func(context.Context) error, error) {
	if a.cfg.ContainerEngine == "" {
		return nil, nil
	}
	f, err := engine.New(a.cfg.ContainerEngine, a, a.log.Named("engine"))
	if err != nil {
		return nil, err
	}
	if err := f.CheckSocket(); err != nil {
		return nil, err
	}
	a.engine = f
	return f.Run, nil
}
