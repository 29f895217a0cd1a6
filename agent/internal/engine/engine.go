package engine

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"syscall"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/hashicorp/go-hclog"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"
)

// Registrar is what the follower needs of the agent: its registration
// path, under the engine's own source (not the store, not workloads.d).
type Registrar interface {
	// PutContainer registers c (or replaces its registration).
	PutContainer(c Container) error
	// RemoveContainer drops the registration of container id, if any.
	RemoveContainer(id string)
	// ReconcileContainers makes the engine's registrations exactly cs: the
	// labelled containers that exist now.
	ReconcileContainers(cs []Container)
}

// Follower follows one engine.
type Follower struct {
	socket string // the engine's Unix socket
	reg    Registrar
	log    hclog.Logger

	mu    sync.Mutex
	known map[string]bool // container ids looked at: registered or not ours; dropped on removal
}

// New checks the endpoint (unix:///path only) and returns a follower for it.
func New(endpoint string, reg Registrar, log hclog.Logger) (*Follower, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "unix" || u.Path == "" || u.Host != "" {
		return nil, fmt.Errorf("container_engine %q: want unix:///path/to/engine.sock (a local socket only root can use; TCP is not accepted)", endpoint)
	}
	return &Follower{socket: u.Path, reg: reg, log: log, known: map[string]bool{}}, nil
}

// CheckSocket refuses an engine socket that is not a socket owned by
// root: the labels of the containers it reports are trusted because only
// root (or whom root lets: the docker group) can create them.
func (f *Follower) CheckSocket() error {
	fi, err := os.Stat(f.socket)
	if err != nil {
		return fmt.Errorf("container_engine: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if fi.Mode()&os.ModeSocket == 0 || !ok {
		return fmt.Errorf("container_engine %s is not a socket", f.socket)
	}
	if st.Uid != 0 {
		return fmt.Errorf("container_engine %s is owned by uid %d, not root: its containers' labels cannot be trusted; refused", f.socket, st.Uid)
	}
	return nil
}

func (f *Follower) client() (*client.Client, error) {
	if err := f.CheckSocket(); err != nil {
		return nil, err
	}
	// The client negotiates the API version (podman 4 serves 1.41).
	return client.New(client.WithHost("unix://" + f.socket))
}

// Run follows the engine until ctx ends: subscribe to container events,
// reconcile with the containers that exist, then apply each create and
// remove. When the engine goes away (or its socket is no longer root's)
// the registrations stay as they are and it tries again, from 0.1 s
// backing off to every 5 s, and reconciles once the engine answers.
func (f *Follower) Run(ctx context.Context) error {
	delay := 100 * time.Millisecond
	for {
		err := f.follow(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errFollowedOnce) {
			delay = 100 * time.Millisecond // it ran: the engine restarted
		}
		f.log.Warn("container engine unavailable; retrying", "socket", f.socket, "error", err, "retry_in", delay)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return ctx.Err()
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// errFollowedOnce: the stream ran and then ended (the engine restarted).
var errFollowedOnce = errors.New("the engine's event stream ended")

func (f *Follower) follow(ctx context.Context) error {
	cli, err := f.client()
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Subscribe first, then list: a container created in between is in
	// the stream, and putting it twice is harmless.
	ev := cli.Events(ctx, client.EventsListOptions{Filters: make(client.Filters).Add("type", "container")})
	if err := f.reconcile(ctx, cli); err != nil {
		return err
	}
	for {
		select {
		case m := <-ev.Messages:
			f.apply(ctx, cli, m)
		case err := <-ev.Err:
			if err == nil || ctx.Err() != nil {
				return errFollowedOnce
			}
			return fmt.Errorf("%w: %v", errFollowedOnce, err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (f *Follower) reconcile(ctx context.Context, cli *client.Client) error {
	list, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true})
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	var cs []Container
	known := map[string]bool{}
	for _, s := range list.Items {
		known[s.ID] = true
		c, ok, err := fromLabels(s.ID, s.Labels)
		if err != nil {
			f.log.Warn("container not registered", "container", s.ID, "reason", err)
		}
		if ok {
			cs = append(cs, c)
		}
	}
	f.reg.ReconcileContainers(cs)
	f.mu.Lock()
	f.known = known
	f.mu.Unlock()
	f.log.Info("container engine followed", "socket", f.socket, "containers", len(list.Items), "registered", len(cs))
	return nil
}

func (f *Follower) apply(ctx context.Context, cli *client.Client, m events.Message) {
	id := m.Actor.ID
	switch m.Action {
	case events.ActionCreate:
		f.inspect(ctx, cli, id)
	case events.ActionDestroy, events.ActionRemove:
		f.mu.Lock()
		delete(f.known, id)
		f.mu.Unlock()
		f.reg.RemoveContainer(id)
	}
}

// inspect reads a container's labels and registers it if they ask.
func (f *Follower) inspect(ctx context.Context, cli *client.Client, id string) {
	r, err := cli.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		if !cerrdefs.IsNotFound(err) {
			f.log.Warn("inspect container", "container", id, "error", err)
			return
		}
		return // removed already
	}
	var labels map[string]string
	if r.Container.Config != nil {
		labels = r.Container.Config.Labels
	}
	f.mu.Lock()
	f.known[r.Container.ID] = true
	f.mu.Unlock()
	c, ok, err := fromLabels(r.Container.ID, labels)
	if err != nil {
		f.log.Warn("container not registered", "container", r.Container.ID, "reason", err)
	}
	if !ok {
		return
	}
	if err := f.reg.PutContainer(c); err != nil {
		f.log.Warn("container not registered", "container", c.ID, "reason", err)
	}
}

// Lookup makes sure a container the agent is asked about has been looked
// at: a container whose entrypoint asks before its create event reached
// the follower is inspected here, at once. Containers already seen (ours
// or not) cost nothing; the engine is asked at most every time for an id
// it has never reported.
func (f *Follower) Lookup(ctx context.Context, id string) {
	f.mu.Lock()
	seen := f.known[id]
	f.mu.Unlock()
	if seen {
		return
	}
	cli, err := f.client()
	if err != nil {
		return
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	f.inspect(ctx, cli, id)
}
