package agent

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/envlet/envlet/cache"
	"github.com/envlet/envlet/fetch"
)

// File-mounted env (docs/design.md §6). For a registration with "mount": true the
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
// copies the new content into locked memory and queues it; a few writer
// goroutines (mountWriters) take the queued jobs in the order they came.
// Jobs of different workloads are independent and run side by side; a
// workload's jobs never run at once, and a version queued while an older
// one of the same workload still waits replaces it, so each mount goes
// through its versions in order and a burst of changes costs one write.
// The writers stand aside while a resolution holds Agent.mu (gate): every
// request waits for it, so it gets the CPUs first. A mount therefore lags
// the change that caused it by the rest of the resolution and about the
// time of one write (see README, "File-mounted env").
//
// Every file operation is relative to an open directory (openat, mkdirat,
// renameat, unlinkat, fchown on the descriptor), and each file is written
// with one write(2). A writer remembers what it left in .<id> (mounted), so
// the next version of a mount takes no listing: 33 system calls, the
// version swapped and the old one removed by name. Nothing is fsynced:
// mount_dir is meant to be a tmpfs (/run), and every mount is rewritten
// from the store at each start, so durability across a crash would buy
// nothing.

// maxMountWriters bounds the writer goroutines: the link swaps all rename
// into mount_dir, which the kernel serializes, so more buy little.
const maxMountWriters = 8

// mountWriters is how many writer goroutines a mounter runs: one per CPU
// the agent may use, at least two (a write also waits on the file system),
// at most maxMountWriters.
func mountWriters() int {
	return min(max(2, runtime.GOMAXPROCS(0)), maxMountWriters)
}

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
	sum     uint64     // the digest of what it writes (mounter.digest)
	buf     *cache.Buf // every value, back to back
	vars    []mountVar // the environment, sorted by name, cleared names left out
	secrets []mountVar // secrets/NAME
}

func (j *mountJob) free() {
	if j != nil {
		j.buf.Free()
	}
}

// mounted is a version of a mount as its writer left it. Not changed once
// it is in mounter.written.
type mounted struct {
	sum     uint64 // the job's digest
	version string
	files   []string // in the version directory, besides secrets/
	secrets []string // in secrets/
	// alone says .<id> holds this version and nothing else, so the next
	// write may remove it by these names without listing anything.
	alone bool
}

// sweeping stands in m.busy for a workload whose stale mount the sweep is
// removing.
var sweeping = &mountJob{remove: true}

// mounter owns mount_dir.
type mounter struct {
	dir      string
	log      hclog.Logger
	pool     *cache.Pool
	chown    bool        // running as root: mounts are given to their workload
	uid, gid int         // the agent's effective ids: old versions are taken back to them
	umask    os.FileMode // the process's, read at the start: a file mode it narrows is set again
	writers  int
	// gate, when set, is the agent's lock for reading: each writer takes
	// and drops it before a job, so the writers stand aside while a
	// resolution holds the lock (it blocks every request) instead of
	// taking CPU from it.
	gate sync.Locker
	// wrote, when set, is told each version a writer has swapped in (the
	// agent counts it as served: the workload can read it).
	wrote func(id string, rev fetch.Revision)
	// result, when set, is told whether each mount write succeeded (metrics).
	result func(ok bool)

	// state is what was last handed to the writers, by workload id. Only
	// touched with Agent.mu held for writing.
	state   map[string]uint64
	seed    maphash.Seed // of the digests in state and in jobs
	scratch []byte       // digest's, under Agent.mu

	mu      sync.Mutex
	cond    *sync.Cond           // signalled when queue grows or done is set
	pending map[string]*mountJob // by id: the version waiting for a writer (only the latest)
	queue   []string             // ids in pending that no writer holds, in the order they were queued
	busy    map[string]*mountJob // by id: the job a writer is doing (sweeping: the sweep's)
	written map[string]*mounted  // by id: the version its link was last swapped to
	done    bool

	jobDone     chan string     // tests: the id of each job done
	beforeWrite func(*mountJob) // tests: called by a writer before it does a job
}

func newMounter(dir string, log hclog.Logger, pool *cache.Pool) *mounter {
	m := &mounter{
		dir: dir, log: log, pool: pool,
		chown:   os.Geteuid() == 0,
		uid:     os.Geteuid(),
		gid:     os.Getegid(),
		umask:   processUmask(),
		writers: mountWriters(),
		state:   map[string]uint64{},
		seed:    maphash.MakeSeed(),
		pending: map[string]*mountJob{},
		busy:    map[string]*mountJob{},
		written: map[string]*mounted{},
	}
	m.cond = sync.NewCond(&m.mu)
	return m
}

// processUmask reads the process's umask without changing it (umask(2)
// would, for a moment, for every thread); when it cannot, it answers the
// strictest, so every mode is then set explicitly.
func processUmask() os.FileMode {
	b, err := os.ReadFile("/proc/self/status")
	if err == nil {
		if _, rest, ok := bytes.Cut(b, []byte("\nUmask:\t")); ok {
			if line, _, ok := bytes.Cut(rest, []byte("\n")); ok {
				if u, err := strconv.ParseUint(string(line), 8, 32); err == nil {
					return os.FileMode(u) & 0o777
				}
			}
		}
	}
	return 0o777
}

// enqueue hands j to the writers, replacing a version of the same workload
// that is still waiting: only the latest matters.
func (m *mounter) enqueue(j *mountJob) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.done {
		j.free()
		return
	}
	if old, ok := m.pending[j.id]; ok {
		old.free() // keeps its place in the queue, or its turn after the busy job
	} else if _, ok := m.busy[j.id]; !ok {
		m.queue = append(m.queue, j.id)
		m.cond.Signal()
	}
	m.pending[j.id] = j
}

// holds reports whether id's mount has, or will have without a new job,
// the version whose digest is sum: a job for it waits for a writer or is
// being written (taken off pending, its link not swapped yet), or it was
// written and its link is still there (not removed by hand).
func (m *mounter) holds(id string, sum uint64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if j := m.pending[id]; j != nil {
		return !j.remove && j.sum == sum
	}
	if j := m.busy[id]; j != nil {
		return !j.remove && j.sum == sum
	}
	w := m.written[id]
	return w != nil && w.sum == sum && m.present(id)
}

// Run runs the writers until ctx ends; each finishes the job it is doing.
// Mounts stay on disk when the agent stops: runtimes keep reading them, and
// the next start rewrites them.
func (m *mounter) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for range m.writers {
		wg.Go(m.work)
	}
	<-ctx.Done()
	m.mu.Lock()
	m.done = true
	m.cond.Broadcast()
	m.mu.Unlock()
	wg.Wait()
	m.mu.Lock()
	for id, j := range m.pending {
		j.free()
		delete(m.pending, id)
	}
	m.queue = nil
	m.mu.Unlock()
	return nil
}

// work is one writer: it takes the oldest queued job whose workload no
// other writer holds, until the mounter is done.
func (m *mounter) work() {
	for {
		if m.gate != nil {
			m.gate.Lock()
			//lint:ignore SA2001 the point is to wait while a resolution holds the lock
			m.gate.Unlock()
		}
		m.mu.Lock()
		for len(m.queue) == 0 && !m.done {
			m.cond.Wait()
		}
		if m.done {
			m.mu.Unlock()
			return
		}
		id := m.queue[0]
		m.queue[0] = ""
		m.queue = m.queue[1:]
		j := m.pending[id]
		delete(m.pending, id)
		m.busy[id] = j
		m.mu.Unlock()
		m.do(j)
	}
}

func (m *mounter) do(j *mountJob) {
	defer j.free()
	if m.jobDone != nil {
		defer func() { m.jobDone <- j.id }()
	}
	var held *mounted // what id's link points to once done (nil: not known)
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
		w, err := m.write(j)
		if err != nil {
			// Not known to hold j: the next resolution writes it again.
			m.log.Error("write mount", "workload", j.id, "revision", j.rev, "error", err)
			m.noteResult(false)
			return
		}
		held = w
		m.noteResult(true)
		if m.wrote != nil {
			m.wrote(j.id, j.rev)
		}
		m.log.Debug("mount written", "workload", j.id, "revision", j.rev, "version", w.version, "took", time.Since(start))
	}
}

// finish records, in one step, that the writer is done with j and what
// j's workload's link now points to (held; nil: not known), and queues the
// version of the workload that came meanwhile.
func (m *mounter) finish(j *mountJob, held *mounted) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.busy[j.id] == j {
		delete(m.busy, j.id)
	}
	switch {
	case j.id == "":
	case held == nil:
		delete(m.written, j.id)
	default:
		m.written[j.id] = held
	}
	m.requeue(j.id)
}

// requeue queues id's pending job, if one came while id was busy. Called
// with m.mu held.
func (m *mounter) requeue(id string) {
	if _, ok := m.pending[id]; ok && !m.done {
		m.queue = append(m.queue, id)
		m.cond.Signal()
	}
}

// claim makes id busy for the sweep, unless a job for it waits or is being
// done: that job decides what id's mount holds.
func (m *mounter) claim(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pending[id] != nil || m.busy[id] != nil {
		return false
	}
	m.busy[id] = sweeping
	return true
}

// release ends a claim.
func (m *mounter) release(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.busy, id)
	m.requeue(id)
}

const dirFlags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC

// openDir opens mount_dir, creating it (0755) if it is missing.
func (m *mounter) openDir() (int, error) {
	fd, err := unix.Open(m.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err == unix.ENOENT {
		// Modes are set explicitly: the agent may run under a umask
		// (systemd's UMask=) that would keep workloads out.
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			return -1, fmt.Errorf("create mount dir: %w", err)
		}
		if err := os.Chmod(m.dir, 0o755); err != nil {
			return -1, fmt.Errorf("create mount dir: %w", err)
		}
		fd, err = unix.Open(m.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return -1, fmt.Errorf("open mount dir %s: %w", m.dir, err)
	}
	return fd, nil
}

// write puts j on disk as a new version and swaps the link to it.
func (m *mounter) write(j *mountJob) (*mounted, error) {
	mfd, err := m.openDir()
	if err != nil {
		return nil, err
	}
	defer unix.Close(mfd)
	// .<id> is the agent's: others may pass through it to their version but
	// not list it. An id never starts with '.', so this never names a link.
	vname := "." + j.id
	vfd, err := unix.Openat(mfd, vname, dirFlags, 0)
	if err == unix.ENOENT {
		if err := unix.Mkdirat(mfd, vname, 0o711); err != nil && err != unix.EEXIST {
			return nil, fmt.Errorf("create %s: %w", vname, err)
		}
		vfd, err = unix.Openat(mfd, vname, dirFlags, 0)
	}
	switch {
	case err == unix.ENOTDIR || err == unix.ELOOP:
		return nil, fmt.Errorf("%s is not a directory", filepath.Join(m.dir, vname))
	case err != nil:
		return nil, fmt.Errorf("open %s: %w", vname, err)
	}
	defer unix.Close(vfd)

	// What is there now. After a write of this run that left .<id> with
	// its version alone, that version; otherwise (the first write since
	// the start, or one whose clean-up failed) whatever a listing finds:
	// the version in force and anything an earlier write left. This
	// writer is the only one at work in .<id>.
	prev := m.known(j.id)
	var old []dirent
	base := strconv.FormatInt(int64(j.rev), 10)
	var version string
	for {
		if prev == nil {
			if old, err = m.survey(vfd, vname); err != nil {
				return nil, err
			}
		}
		version = base
		for n := 2; prev != nil && version == prev.version || hasEntry(old, version); n++ {
			version = base + "-" + strconv.Itoa(n)
		}
		err := unix.Mkdirat(vfd, version, 0o700)
		if err == unix.EEXIST && prev != nil {
			prev = nil // someone else wrote in .<id>: look
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("create version: %w", err)
		}
		break
	}
	w := &mounted{sum: j.sum, version: version, alone: true}
	if err := m.fill(j, vfd, version, w); err != nil {
		m.reclaimAt(vfd, version)
		return nil, err
	}
	if hasEntry(old, ".link") {
		unix.Unlinkat(vfd, ".link", 0)
	}
	err = unix.Symlinkat(vname+"/"+version, vfd, ".link")
	if err == unix.EEXIST { // left by a write that did not finish
		unix.Unlinkat(vfd, ".link", 0)
		err = unix.Symlinkat(vname+"/"+version, vfd, ".link")
	}
	if err != nil {
		m.reclaimAt(vfd, version)
		return nil, fmt.Errorf("link new version: %w", err)
	}
	if err := unix.Renameat(vfd, ".link", mfd, j.id); err != nil {
		// Something that is not our link is in the way (a directory made
		// by hand): mount_dir is the agent's, so replace it.
		var st unix.Stat_t
		if unix.Fstatat(mfd, j.id, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			m.log.Warn("replacing a directory in the way of a mount", "path", filepath.Join(m.dir, j.id))
			if err = m.reclaimAt(mfd, j.id); err == nil {
				err = unix.Renameat(vfd, ".link", mfd, j.id)
			}
		}
		if err != nil {
			unix.Unlinkat(vfd, ".link", 0)
			m.reclaimAt(vfd, version)
			return nil, fmt.Errorf("swap in new version: %w", err)
		}
	}
	// The old versions go now: a rotated secret must not stay readable. A
	// reader that opened the old directory before the swap gets ENOENT on
	// its next open and must start again from the link.
	if prev != nil && !m.removeKnown(vfd, prev) {
		old = []dirent{{prev.version, unix.DT_DIR}}
	}
	for _, e := range old {
		if e.name == ".link" {
			continue
		}
		if err := m.reclaimAt(vfd, e.name); err != nil {
			w.alone = false
			m.log.Warn("remove old mount version", "workload", j.id, "version", e.name, "error", err)
		}
	}
	return w, nil
}

// known is what the last write of id this run left, when .<id> holds that
// version alone.
func (m *mounter) known(id string) *mounted {
	m.mu.Lock()
	defer m.mu.Unlock()
	if w := m.written[id]; w != nil && w.alone {
		return w
	}
	return nil
}

// survey gives .<id>, open at vfd, its mode back if it lost it, and lists
// what is in it.
func (m *mounter) survey(vfd int, vname string) ([]dirent, error) {
	var st unix.Stat_t
	if err := unix.Fstat(vfd, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", vname, err)
	}
	if st.Mode&0o7777 != 0o711 {
		if err := unix.Fchmod(vfd, 0o711); err != nil {
			return nil, fmt.Errorf("chmod %s: %w", vname, err)
		}
	}
	old, err := readDir(vfd)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", vname, err)
	}
	return old, nil
}

// removeKnown removes the version prev of the mount in vfd by the names
// its write left in it, without listing it; false when it holds anything
// else (its workload changed it), for reclaimAt to finish. The version
// directory is the agent's entry in .<id>, which only the agent can
// change, so it is taken back by its name; the secrets directory in it
// could be a link its workload made, so it is taken back through a
// descriptor, and only when it has files to remove.
func (m *mounter) removeKnown(vfd int, prev *mounted) bool {
	v := prev.version
	if m.chown && unix.Fchownat(vfd, v, m.uid, m.gid, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return false
	}
	if unix.Fchmodat(vfd, v, 0o700, 0) != nil {
		return false
	}
	for _, f := range prev.files {
		if err := unix.Unlinkat(vfd, v+"/"+f, 0); err != nil && err != unix.ENOENT {
			return false
		}
	}
	if len(prev.secrets) > 0 {
		sfd, err := unix.Openat(vfd, v+"/secrets", dirFlags, 0)
		if err != nil {
			return false
		}
		ok := true
		if m.chown {
			ok = unix.Fchown(sfd, m.uid, m.gid) == nil
		}
		ok = ok && unix.Fchmod(sfd, 0o700) == nil
		for _, s := range prev.secrets {
			if !ok {
				break
			}
			if err := unix.Unlinkat(sfd, s, 0); err != nil && err != unix.ENOENT {
				ok = false
			}
		}
		unix.Close(sfd)
		if !ok {
			return false
		}
	}
	if err := unix.Unlinkat(vfd, v+"/secrets", unix.AT_REMOVEDIR); err != nil && err != unix.ENOENT {
		return false
	}
	return unix.Unlinkat(vfd, v, unix.AT_REMOVEDIR) == nil
}

// The files of a version besides secrets/, and the lists of the names
// each format could not carry.
var (
	envFileNames = [3]string{"env", "docker.env", "env.json"}
	skippedNames = [3]string{"env.skipped", "docker.env.skipped", "env.json.skipped"}
)

// fill writes the version directory vfd/version, made empty and 0700 by
// the caller: every file complete with one write, then the directories
// handed to their owner. It records the names it wrote in w.
func (m *mounter) fill(j *mountJob, vfd int, version string, w *mounted) error {
	dfd, err := unix.Openat(vfd, version, dirFlags, 0)
	if err != nil {
		return fmt.Errorf("open version: %w", err)
	}
	defer unix.Close(dfd)
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
	data := [3][]byte{e.env, e.docker, e.json}
	skip := [3][]string{e.envSkip, e.dockerSkip, e.jsonSkip}
	w.files = make([]string, 0, 3)
	for i, name := range envFileNames {
		if err := m.writeFile(dfd, name, data[i], o); err != nil {
			return err
		}
		w.files = append(w.files, name)
		if len(skip[i]) > 0 {
			if err := m.writeFile(dfd, skippedNames[i], []byte(strings.Join(skip[i], "\n")+"\n"), o); err != nil {
				return err
			}
			w.files = append(w.files, skippedNames[i])
		}
	}
	if err := unix.Mkdirat(dfd, "secrets", 0o700); err != nil {
		return fmt.Errorf("create secrets dir: %w", err)
	}
	if len(j.secrets) > 0 {
		sfd, err := unix.Openat(dfd, "secrets", dirFlags, 0)
		if err != nil {
			return fmt.Errorf("open secrets dir: %w", err)
		}
		w.secrets = make([]string, 0, len(j.secrets))
		for _, s := range j.secrets {
			if err = m.writeFile(sfd, s.name, s.value, o); err != nil {
				break
			}
			w.secrets = append(w.secrets, s.name)
		}
		if err == nil {
			err = m.handOver(sfd, "secrets", o)
		}
		unix.Close(sfd)
		if err != nil {
			return err
		}
	} else {
		// Made just now in a directory only the agent may write to: the
		// name is the directory.
		if err := unix.Fchmodat(dfd, "secrets", uint32(o.dirMode), 0); err != nil {
			return fmt.Errorf("chmod secrets: %w", err)
		}
		if m.chown {
			if err := unix.Fchownat(dfd, "secrets", o.uid, o.gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return fmt.Errorf("chown secrets: %w", err)
			}
		}
	}
	return m.handOver(dfd, version, o)
}

// writeFile creates dfd/name with data in one write, with its mode (set
// again when the umask narrowed it) and owner.
func (m *mounter) writeFile(dfd int, name string, data []byte, o mountOwner) error {
	fd, err := unix.Openat(dfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(o.fileMode))
	if err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	err = writeAll(fd, data)
	if err == nil && o.fileMode&^m.umask != o.fileMode {
		err = unix.Fchmod(fd, uint32(o.fileMode))
	}
	if err == nil && m.chown {
		err = unix.Fchown(fd, o.uid, o.gid)
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

func writeAll(fd int, data []byte) error {
	for len(data) > 0 {
		n, err := unix.Write(fd, data)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// handOver gives the finished directory open at fd its mode, then its
// owner: once the owner changes, only CAP_FOWNER could change the mode.
func (m *mounter) handOver(fd int, name string, o mountOwner) error {
	if err := unix.Fchmod(fd, uint32(o.dirMode)); err != nil {
		return fmt.Errorf("chmod %s: %w", name, err)
	}
	if m.chown {
		if err := unix.Fchown(fd, o.uid, o.gid); err != nil {
			return fmt.Errorf("chown %s: %w", name, err)
		}
	}
	return nil
}

// remove takes a workload's mount away: the link first, so readers stop
// finding it, then every version.
func (m *mounter) remove(id string) error {
	mfd, err := unix.Open(m.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err == unix.ENOENT {
		return nil
	} else if err != nil {
		return fmt.Errorf("open mount dir %s: %w", m.dir, err)
	}
	defer unix.Close(mfd)
	switch err := unix.Unlinkat(mfd, id, 0); err {
	case nil, unix.ENOENT:
	case unix.EISDIR:
		if err := m.reclaimAt(mfd, id); err != nil {
			return err
		}
	default:
		return fmt.Errorf("remove %s: %w", id, err)
	}
	return m.reclaimAt(mfd, "."+id)
}

// sweep removes the mounts a previous run left for workloads that are no
// longer registered with "mount": true. It touches only names it would
// have made itself, and no workload a job is queued for or being done.
func (m *mounter) sweep(keep map[string]bool) {
	mfd, err := unix.Open(m.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(mfd)
	entries, err := readDir(mfd)
	if err != nil {
		return
	}
	for _, e := range entries {
		id, hidden := strings.CutPrefix(e.name, ".")
		if !validIdent(id) || keep[id] {
			continue
		}
		typ := e.typ
		if typ == unix.DT_UNKNOWN {
			typ = typeAt(mfd, e.name)
		}
		if !(hidden && typ == unix.DT_DIR || !hidden && typ == unix.DT_LNK) || !m.claim(id) {
			continue
		}
		var err error
		if hidden {
			err = m.reclaimAt(mfd, e.name)
		} else if err = unix.Unlinkat(mfd, e.name, 0); err == unix.ENOENT {
			err = nil
		}
		m.release(id)
		p := filepath.Join(m.dir, e.name)
		if err != nil {
			m.log.Warn("remove a stale mount", "path", p, "error", err)
		} else {
			m.log.Info("removed a stale mount", "path", p)
		}
	}
}

// reclaim removes path and everything under it (see reclaimAt).
func (m *mounter) reclaim(path string) error {
	return m.reclaimAt(unix.AT_FDCWD, path)
}

// reclaimAt removes name in the directory dirfd, and everything under it.
// Version directories belong to their workload and are read-only, so each
// directory is first taken back (owner, then mode 0700) through a file
// descriptor opened without following symlinks: a workload that replaced a
// directory of its own by a link cannot make the agent change or remove
// anything outside the mount.
func (m *mounter) reclaimAt(dirfd int, name string) error {
	fd, err := unix.Openat(dirfd, name, dirFlags, 0)
	switch err {
	case nil:
	case unix.ENOENT:
		return nil
	case unix.ENOTDIR, unix.ELOOP: // a file or a link: it goes itself
		if err := unix.Unlinkat(dirfd, name, 0); err != nil && err != unix.ENOENT {
			return fmt.Errorf("remove %s: %w", name, err)
		}
		return nil
	default:
		return fmt.Errorf("remove %s: %w", name, err)
	}
	if m.chown {
		unix.Fchown(fd, m.uid, m.gid)
	}
	unix.Fchmod(fd, 0o700)
	// Entries the workload adds while the directory is emptied make the
	// rmdir fail: empty it again, a few times.
	for try := 0; ; try++ {
		if err = m.empty(fd, try > 0); err == nil {
			err = unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
		}
		if err != unix.ENOTEMPTY || try == 3 {
			break
		}
	}
	unix.Close(fd)
	if err != nil && err != unix.ENOENT {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	return nil
}

// empty removes everything in the directory open at fd (which the agent
// took back); again says to read it from its start once more.
func (m *mounter) empty(fd int, again bool) error {
	if again {
		if _, err := unix.Seek(fd, 0, 0); err != nil {
			return err
		}
	}
	entries, err := readDir(fd)
	if err != nil {
		return err
	}
	var first error
	for _, e := range entries {
		var err error
		if e.typ == unix.DT_DIR {
			err = m.reclaimAt(fd, e.name)
		} else if err = unix.Unlinkat(fd, e.name, 0); err == unix.EISDIR {
			err = m.reclaimAt(fd, e.name) // a directory the file system did not type
		}
		if err != nil && err != unix.ENOENT && first == nil {
			first = err
		}
	}
	return first
}

// dirent is a directory entry: its name and type (unix.DT_*).
type dirent struct {
	name string
	typ  uint8
}

// readDir lists the directory open at fd from where its offset is, "." and
// ".." left out.
func readDir(fd int) ([]dirent, error) {
	var out []dirent
	var buf [8 << 10]byte
	for {
		n, err := unix.Getdents(fd, buf[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return out, nil
		}
		// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name.
		for b := buf[:n]; len(b) >= 19; {
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < 19 || reclen > len(b) {
				return nil, errors.New("malformed directory entry")
			}
			name := b[19:reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if s := string(name); s != "." && s != ".." {
				out = append(out, dirent{s, b[18]})
			}
			b = b[reclen:]
		}
	}
}

func hasEntry(list []dirent, name string) bool {
	for _, e := range list {
		if e.name == name {
			return true
		}
	}
	return false
}

// typeAt is the unix.DT_* type of name in dirfd, not following a link;
// DT_UNKNOWN when it cannot tell.
func typeAt(dirfd int, name string) uint8 {
	var st unix.Stat_t
	if unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return unix.DT_UNKNOWN
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return unix.DT_DIR
	case unix.S_IFLNK:
		return unix.DT_LNK
	}
	return unix.DT_REG
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

	size := 0
	for _, r := range res {
		size += len(r.value)
	}
	for _, s := range secrets {
		size += len(s.value)
	}
	if lim := a.limits().MountBytes; size > lim {
		// Not written: the last version stays, and the next change that
		// brings it under the limit writes it (the state is not updated,
		// so it is not taken as written). Names and sizes only.
		a.log.Error("mount not updated: the new version is over mount_bytes_limit; the last version stays",
			"workload", id, "bytes", size, "mount_bytes_limit", lim)
		return
	}
	m.state[id] = sum
	j := &mountJob{id: id, owner: owner, rev: a.model.rev, sum: sum, buf: m.pool.Alloc(size),
		vars: make([]mountVar, 0, len(res)), secrets: make([]mountVar, 0, len(secrets))}
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

// digest sums everything a version of a mount holds: each name and value
// hashed where it lies (maphash, no copy of a value is made), then those
// sums. The seed is the agent's own, drawn at random, so a sum says
// nothing about a value; a sum is only compared with the last one of the
// same workload, to skip rewriting a mount that would not change. Called
// with a.mu held for writing (it uses m.scratch).
func (m *mounter) digest(o mountOwner, res []resolved, secrets []mountSecret) uint64 {
	b := m.scratch[:0]
	put := func(x uint64) { b = binary.LittleEndian.AppendUint64(b, x) }
	put(uint64(o.uid))
	put(uint64(o.gid))
	put(uint64(o.dirMode)<<32 | uint64(o.fileMode))
	put(uint64(len(res)))
	for _, r := range res {
		if len(r.value) > 0 {
			put(maphash.String(m.seed, r.name))
			put(maphash.Bytes(m.seed, r.value))
		}
	}
	put(uint64(len(secrets)))
	for _, s := range secrets {
		put(maphash.String(m.seed, s.name))
		if s.file {
			put(1)
		} else {
			put(0)
		}
		put(maphash.Bytes(m.seed, s.value))
	}
	m.scratch = b
	return maphash.Bytes(m.seed, b)
}
