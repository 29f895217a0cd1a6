package agent

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/envlet/envlet/cache"
	"github.com/envlet/envlet/fetch"
)

// File-mounted env (DESIGN §6). For a registration with "mount": true the
// agent keeps
//
//	<mount_dir>/<id>            a symlink to the version in force
//	<mount_dir>/.<id>/<version> env, docker.env, env.json, secrets/NAME
//
// A new version is written complete in its own directory, then the link is
// swapped to it with one rename(2), so a reader that resolves the link sees
// one whole version; the older versions are removed right after. A version
// is named after the store revision it holds (a second write at the same
// revision gets "-2", "-3", …). Directories are 0500 and files 0400, owned
// by the registration's match.uid (group match.gid); with a gid but no uid
// they are root's, 0550/0440, for that group; with neither, root's.
//
// Writes happen off the resolution path: afterResolve (under Agent.mu)
// copies the new content into locked memory and queues it; one writer
// goroutine writes the latest queued version of each workload, in order.
// A mount therefore lags the change that caused it by the time of one
// write (see README, "File-mounted env").

// mountVar is one variable or secret of a mount; value aliases the job's
// locked buffer.
type mountVar struct {
	name  string
	value []byte
}

// mountOwner is who a mount belongs to.
type mountOwner struct {
	uid, gid          int // -1: the agent's own
	dirMode, fileMode os.FileMode
}

func ownerOf(m Match) mountOwner {
	switch {
	case m.UID != nil:
		gid := 0
		if m.GID != nil {
			gid = int(*m.GID)
		}
		return mountOwner{int(*m.UID), gid, 0o500, 0o400}
	case m.GID != nil:
		return mountOwner{0, int(*m.GID), 0o550, 0o440}
	}
	return mountOwner{0, 0, 0o500, 0o400}
}

// mountJob is one version of one workload's mount to write, its removal,
// or (id "") a sweep of what a previous run left behind.
type mountJob struct {
	id      string
	remove  bool
	keep    map[string]bool // sweep: the ids whose mounts stay
	owner   mountOwner
	rev     fetch.Revision
	sum     [32]byte   // the digest of what it writes (mounter.digest)
	buf     *cache.Buf // every value, back to back
	vars    []mountVar // the environment, sorted by name, cleared names left out
	secrets []mountVar // secrets/NAME
}

func (j *mountJob) free() {
	if j != nil {
		j.buf.Free()
	}
}

// mounter owns mount_dir.
type mounter struct {
	dir   string
	log   hclog.Logger
	pool  *cache.Pool
	chown bool     // running as root: mounts are given to their workload
	key   [32]byte // keys the digests in state, so they say nothing about values

	// state is what was last handed to the writer, by workload id. Only
	// touched with Agent.mu held for writing.
	state map[string][32]byte

	mu      sync.Mutex
	pending map[string]*mountJob
	queue   []string            // ids of pending, in the order they were first queued
	writing *mountJob           // the job the writer took off pending and is doing
	written map[string][32]byte // by id: the digest of the version its link was last swapped to
	wake    chan struct{}
	done    bool

	jobDone     chan string     // tests: the id of each job done
	beforeWrite func(*mountJob) // tests: called by the writer before it writes a job
}

func newMounter(dir string, log hclog.Logger, pool *cache.Pool) *mounter {
	m := &mounter{
		dir: dir, log: log, pool: pool,
		chown:   os.Geteuid() == 0,
		state:   map[string][32]byte{},
		pending: map[string]*mountJob{},
		written: map[string][32]byte{},
		wake:    make(chan struct{}, 1),
	}
	rand.Read(m.key[:])
	return m
}

// enqueue hands j to the writer, replacing a version of the same workload
// that is still waiting: only the latest matters.
func (m *mounter) enqueue(j *mountJob) {
	m.mu.Lock()
	if m.done {
		m.mu.Unlock()
		j.free()
		return
	}
	if old, ok := m.pending[j.id]; ok {
		old.free()
	} else {
		m.queue = append(m.queue, j.id)
	}
	m.pending[j.id] = j
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// holds reports whether id's mount has, or will have without a new job,
// the version whose digest is sum: a job for it waits for the writer or is
// being written (taken off pending, its link not swapped yet), or it was
// written and its link is still there (not removed by hand).
func (m *mounter) holds(id string, sum [32]byte) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if j := m.pending[id]; j != nil {
		return !j.remove && j.sum == sum
	}
	if j := m.writing; j != nil && j.id == id {
		return !j.remove && j.sum == sum
	}
	w, ok := m.written[id]
	return ok && w == sum && m.present(id)
}

// Run writes queued jobs until ctx ends. Mounts stay on disk when the agent
// stops: runtimes keep reading them, and the next start rewrites them.
func (m *mounter) Run(ctx context.Context) error {
	defer func() {
		m.mu.Lock()
		m.done = true
		for id, j := range m.pending {
			j.free()
			delete(m.pending, id)
		}
		m.queue = nil
		m.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-m.wake:
		}
		for {
			m.mu.Lock()
			if len(m.queue) == 0 {
				m.mu.Unlock()
				break
			}
			id := m.queue[0]
			m.queue = m.queue[1:]
			j := m.pending[id]
			delete(m.pending, id)
			m.writing = j
			m.mu.Unlock()
			m.do(j)
			if ctx.Err() != nil {
				return nil
			}
		}
	}
}

func (m *mounter) do(j *mountJob) {
	defer j.free()
	if m.jobDone != nil {
		defer func() { m.jobDone <- j.id }()
	}
	var held *[32]byte // the digest of what id's link points to once done (nil: none known)
	defer func() { m.finish(j, held) }()
	if m.beforeWrite != nil {
		m.beforeWrite(j)
	}
	start := time.Now()
	switch {
	case j.id == "":
		m.sweep(j.keep)
	case j.remove:
		if err := m.remove(j.id); err != nil {
			m.log.Error("remove mount", "workload", j.id, "error", err)
			return
		}
		m.log.Debug("mount removed", "workload", j.id)
	default:
		version, err := m.write(j)
		if err != nil {
			// Not known to hold j: the next resolution writes it again.
			m.log.Error("write mount", "workload", j.id, "revision", j.rev, "error", err)
			return
		}
		held = &j.sum
		m.log.Debug("mount written", "workload", j.id, "revision", j.rev, "version", version, "took", time.Since(start))
	}
}

// finish records, in one step, that the writer is done with j and what
// j's workload's link now points to (held: the digest of that version;
// nil: none known).
func (m *mounter) finish(j *mountJob, held *[32]byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.writing == j {
		m.writing = nil
	}
	switch {
	case j.id == "":
	case held == nil:
		delete(m.written, j.id)
	default:
		m.written[j.id] = *held
	}
}

// write puts j on disk as a new version and swaps the link to it.
func (m *mounter) write(j *mountJob) (string, error) {
	// Modes are set explicitly: the agent may run under a umask (systemd's
	// UMask=) that would keep workloads out.
	if _, err := os.Stat(m.dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			return "", fmt.Errorf("create mount dir: %w", err)
		}
		if err := os.Chmod(m.dir, 0o755); err != nil {
			return "", fmt.Errorf("create mount dir: %w", err)
		}
	}
	// .<id> is the agent's: others may pass through it to their version but
	// not list it. An id never starts with '.', so this never names a link.
	vroot := filepath.Join(m.dir, "."+j.id)
	if err := os.Mkdir(vroot, 0o711); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("create %s: %w", vroot, err)
	}
	if fi, err := os.Lstat(vroot); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("%s is not a directory", vroot)
	} else if fi.Mode().Perm() != 0o711 {
		if err := os.Chmod(vroot, 0o711); err != nil {
			return "", fmt.Errorf("chmod %s: %w", vroot, err)
		}
	}
	version := strconv.FormatInt(int64(j.rev), 10)
	for n := 2; ; n++ {
		if _, err := os.Lstat(filepath.Join(vroot, version)); errors.Is(err, os.ErrNotExist) {
			break
		}
		version = strconv.FormatInt(int64(j.rev), 10) + "-" + strconv.Itoa(n)
	}
	vdir := filepath.Join(vroot, version)
	if err := m.fill(j, vdir); err != nil {
		m.reclaim(vdir)
		return "", err
	}
	tmp := filepath.Join(vroot, ".link")
	os.Remove(tmp)
	if err := os.Symlink("."+j.id+"/"+version, tmp); err != nil {
		m.reclaim(vdir)
		return "", fmt.Errorf("link new version: %w", err)
	}
	link := filepath.Join(m.dir, j.id)
	if err := os.Rename(tmp, link); err != nil {
		// Something that is not our link is in the way (a directory made
		// by hand): mount_dir is the agent's, so replace it.
		if fi, lerr := os.Lstat(link); lerr == nil && fi.IsDir() {
			m.log.Warn("replacing a directory in the way of a mount", "path", link)
			if err = m.reclaim(link); err == nil {
				err = os.Rename(tmp, link)
			}
		}
		if err != nil {
			os.Remove(tmp)
			m.reclaim(vdir)
			return "", fmt.Errorf("swap in new version: %w", err)
		}
	}
	// The old versions go now: a rotated secret must not stay readable. A
	// reader that opened the old directory before the swap gets ENOENT on
	// its next open and must start again from the link.
	entries, _ := os.ReadDir(vroot)
	for _, e := range entries {
		if e.Name() != version {
			if err := m.reclaim(filepath.Join(vroot, e.Name())); err != nil {
				m.log.Warn("remove old mount version", "workload", j.id, "version", e.Name(), "error", err)
			}
		}
	}
	return version, nil
}

// fill writes a version directory: every file complete, then the
// directory handed to its owner.
func (m *mounter) fill(j *mountJob, vdir string) error {
	if err := os.Mkdir(vdir, 0o700); err != nil {
		return fmt.Errorf("create version: %w", err)
	}
	o := j.owner
	var e envFiles
	bufs := [3]*cache.Buf{m.pool.Alloc(envSize(j.vars)), m.pool.Alloc(dockerSize(j.vars)), m.pool.Alloc(jsonSize(j.vars))}
	defer func() {
		for _, b := range bufs {
			b.Free()
		}
	}()
	header := "# written by envletd for workload " + j.id + " at revision " + strconv.FormatInt(int64(j.rev), 10) + "; do not edit\n"
	e.env = append(bufs[0].Bytes()[:0], header...)
	e.docker = append(bufs[1].Bytes()[:0], header...)
	e.json = bufs[2].Bytes()[:0]
	renderEnvFiles(&e, j.vars)
	files := []struct {
		name string
		data []byte
		skip []string
	}{{"env", e.env, e.envSkip}, {"docker.env", e.docker, e.dockerSkip}, {"env.json", e.json, e.jsonSkip}}
	for _, f := range files {
		if err := m.writeFile(vdir, f.name, f.data, o); err != nil {
			return err
		}
		if len(f.skip) > 0 {
			if err := m.writeFile(vdir, f.name+".skipped", []byte(strings.Join(f.skip, "\n")+"\n"), o); err != nil {
				return err
			}
		}
	}
	sdir := filepath.Join(vdir, "secrets")
	if err := os.Mkdir(sdir, 0o700); err != nil {
		return fmt.Errorf("create secrets dir: %w", err)
	}
	for _, s := range j.secrets {
		if err := m.writeFile(sdir, s.name, s.value, o); err != nil {
			return err
		}
	}
	if err := m.handOver(sdir, o); err != nil {
		return err
	}
	return m.handOver(vdir, o)
}

// writeFile creates dir/name with data, then gives it its mode and owner.
func (m *mounter) writeFile(dir, name string, data []byte, o mountOwner) error {
	p := filepath.Join(dir, name)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", p, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(o.fileMode)
	}
	if err == nil && m.chown {
		err = f.Chown(o.uid, o.gid)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

// handOver gives a finished directory its mode, then its owner: once the
// owner changes, only CAP_FOWNER could change the mode.
func (m *mounter) handOver(dir string, o mountOwner) error {
	if err := os.Chmod(dir, o.dirMode); err != nil {
		return fmt.Errorf("chmod %s: %w", dir, err)
	}
	if m.chown {
		if err := os.Lchown(dir, o.uid, o.gid); err != nil {
			return fmt.Errorf("chown %s: %w", dir, err)
		}
	}
	return nil
}

// remove takes a workload's mount away: the link first, so readers stop
// finding it, then every version.
func (m *mounter) remove(id string) error {
	link := filepath.Join(m.dir, id)
	if fi, err := os.Lstat(link); err == nil {
		if fi.IsDir() {
			if err := m.reclaim(link); err != nil {
				return err
			}
		} else if err := os.Remove(link); err != nil {
			return err
		}
	}
	return m.reclaim(filepath.Join(m.dir, "."+id))
}

// sweep removes the mounts a previous run left for workloads that are no
// longer registered with "mount": true. It touches only names it would
// have made itself.
func (m *mounter) sweep(keep map[string]bool) {
	entries, err := os.ReadDir(m.dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		id, hidden := strings.CutPrefix(name, ".")
		if !validIdent(id) || keep[id] {
			continue
		}
		p := filepath.Join(m.dir, name)
		var err error
		switch {
		case hidden && e.IsDir():
			err = m.reclaim(p)
		case !hidden && e.Type()&os.ModeSymlink != 0:
			err = os.Remove(p)
		default:
			continue
		}
		if err != nil {
			m.log.Warn("remove a stale mount", "path", p, "error", err)
		} else {
			m.log.Info("removed a stale mount", "path", p)
		}
	}
}

// reclaim removes path and everything under it. Version directories belong
// to their workload and are read-only, so each directory is first taken
// back (owner, then mode 0700) through a file descriptor opened without
// following symlinks: a workload that replaced a directory of its own by a
// link cannot make the agent change anything outside the mount.
func (m *mounter) reclaim(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == nil {
		m.takeBack(fd)
		unix.Close(fd)
	}
	if err := os.RemoveAll(path); err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// takeBack makes the directory open at fd, and every directory below it,
// the agent's and writable, so its entries can be unlinked. It closes
// nothing it did not open.
func (m *mounter) takeBack(fd int) {
	if m.chown {
		unix.Fchown(fd, os.Geteuid(), os.Getegid())
	}
	unix.Fchmod(fd, 0o700)
	dup, err := unix.Dup(fd)
	if err != nil {
		return
	}
	d := os.NewFile(uintptr(dup), "")
	defer d.Close()
	entries, err := d.ReadDir(-1)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		sub, err := unix.Openat(fd, e.Name(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		m.takeBack(sub)
		unix.Close(sub)
	}
}

// updateMount queues a new version of w's mount when its content or owner
// changed since the last one, or when the mount went missing or its last
// write failed; it queues the removal of a mount the registration no longer
// asks for. A resolution that changes nothing of the mount queues nothing,
// even while the writer is busy writing that very version (a registration
// is resolved twice in a row: when it is put, and with the batch that
// brought it). Called from afterResolve with a.mu held for writing: it only
// hashes, copies and queues.
func (a *Agent) updateMount(w *workload, res []resolved) {
	m := a.mounts
	id := w.reg.ID
	if !w.reg.Mount {
		if _, ok := m.state[id]; ok {
			delete(m.state, id)
			m.enqueue(&mountJob{id: id, remove: true})
		}
		return
	}
	owner := ownerOf(w.reg.Match)
	secrets := a.mountSecrets(w)
	sum := m.digest(owner, res, secrets)
	if old, ok := m.state[id]; ok && old == sum && m.holds(id, sum) {
		return
	}
	m.state[id] = sum

	size := 0
	for _, r := range res {
		size += len(r.value)
	}
	for _, s := range secrets {
		size += len(s.value)
	}
	j := &mountJob{id: id, owner: owner, rev: a.model.rev, sum: sum, buf: m.pool.Alloc(size)}
	buf := j.buf.Bytes()[:0]
	for _, r := range res {
		if len(r.value) == 0 {
			continue // cleared: absent from the environment
		}
		buf = append(buf, r.value...)
		j.vars = append(j.vars, mountVar{r.name, buf[len(buf)-len(r.value):]})
	}
	for _, s := range secrets {
		v := s.value
		if s.file {
			// checkSecret lets only valid base64 in; a record that does
			// not decode is left out rather than written wrong.
			n, err := base64.StdEncoding.Decode(buf[len(buf):len(buf)+len(v)], v)
			if err != nil {
				a.log.Error("leaving out of a mount a file secret that does not decode", "workload", id, "name", s.name)
				continue
			}
			buf = buf[:len(buf)+n]
			j.secrets = append(j.secrets, mountVar{s.name, buf[len(buf)-n:]})
			continue
		}
		buf = append(buf, v...)
		j.secrets = append(j.secrets, mountVar{s.name, buf[len(buf)-len(v):]})
	}
	m.enqueue(j)
}

// present reports whether id's link exists. Called with m.mu held.
func (m *mounter) present(id string) bool {
	_, err := os.Lstat(filepath.Join(m.dir, id))
	return err == nil
}

// mountSecret is a secret as a mount takes it: value aliases the model.
type mountSecret struct {
	name  string
	value []byte
	file  bool // value is base64 of the file's bytes
}

// mountSecrets lists the secrets w may read, by name: its user's private
// ones when the user is a member of the project, then the project's, the
// private one winning a name both have (the rule of secretFor). Called with
// a.mu held.
func (a *Agent) mountSecrets(w *workload) []mountSecret {
	p := a.model.liveProject(w.reg.Project)
	if p == nil {
		return nil
	}
	seen := map[string]bool{}
	var out []mountSecret
	add := func(set varSet) {
		for _, n := range set.sortedNames() {
			if !seen[n] {
				seen[n] = true
				v := set[n]
				out = append(out, mountSecret{n, v.value(), v.file()})
			}
		}
	}
	if p.isMember(w.reg.User) {
		add(a.model.userSecrets[w.reg.User])
	}
	add(a.model.projSecrets[w.reg.Project])
	return out
}

// digest sums everything a version of a mount holds, keyed so the sum
// reveals nothing about a value.
func (m *mounter) digest(o mountOwner, res []resolved, secrets []mountSecret) [32]byte {
	h := hmac.New(sha256.New, m.key[:])
	var n [8]byte
	put := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	put([]byte(fmt.Sprintf("%d:%d:%o:%o", o.uid, o.gid, o.dirMode, o.fileMode)))
	for _, r := range res {
		if len(r.value) > 0 {
			put([]byte(r.name))
			put(r.value)
		}
	}
	put(nil)
	for _, s := range secrets {
		put([]byte(s.name))
		if s.file {
			put([]byte{1})
		} else {
			put([]byte{0})
		}
		put(s.value)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	h.Write(zeroBlock[:]) // the hash's block buffer held the last value's tail (audit.go)
	return sum
}
