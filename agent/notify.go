package agent

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"reflect"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// systemd integration (docs/design.md §8): sd_notify (READY after the first fill,
// RELOADING and READY around a reload on SIGHUP, STOPPING, WATCHDOG), and
// the sockets from socket activation.

// notify sends one sd_notify message when $NOTIFY_SOCKET is set; without
// it, or when it fails (systemd gone), nothing happens.
func (a *Agent) notify(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		a.log.Debug("sd_notify", "state", state, "error", err)
	}
}

// Socket names for FileDescriptorName= in envletd.socket.
const (
	fdWorkload    = "workload"
	fdAdmin       = "admin"
	fdCredentials = "credentials"
)

// sockets are the agent's listeners; credentials is nil when
// credentials_socket is empty and systemd passed none.
type sockets struct {
	workload, admin, credentials *net.UnixListener
}

func (s *sockets) Close() {
	for _, l := range []*net.UnixListener{s.workload, s.admin, s.credentials} {
		if l != nil {
			l.Close()
		}
	}
}

// openSockets takes each socket from systemd when it passed one under that
// name (LISTEN_FDS, LISTEN_FDNAMES), and binds the others itself. Sockets
// passed without names are taken in the order workload, admin,
// credentials. A socket from systemd keeps the mode and owner its .socket
// unit gave it, and is not removed when the agent stops.
func (a *Agent) openSockets() (*sockets, error) {
	passed, err := activation.ListenersWithNames()
	if err != nil {
		return nil, fmt.Errorf("socket activation: %w", err)
	}
	byName := map[string]*net.UnixListener{}
	var unnamed []*net.UnixListener
	for _, name := range sortedKeys(passed) {
		for i, l := range passed[name] {
			ul, ok := l.(*net.UnixListener)
			known := name == fdWorkload || name == fdAdmin || name == fdCredentials
			switch {
			case !ok:
				a.log.Warn("ignoring a socket from systemd that is not a Unix stream socket", "name", name)
				l.Close()
			case known && i == 0:
				byName[name] = ul
			case known:
				a.log.Warn("ignoring a second socket from systemd under one name", "name", name)
				l.Close()
			case len(name) > len("LISTEN_FD_") && name[:len("LISTEN_FD_")] == "LISTEN_FD_":
				unnamed = append(unnamed, ul)
			default:
				a.log.Warn("ignoring a socket from systemd with an unknown name (want workload, admin or credentials)", "name", name)
				l.Close()
			}
		}
	}
	for _, name := range []string{fdWorkload, fdAdmin, fdCredentials} {
		if byName[name] == nil && len(unnamed) > 0 {
			byName[name], unnamed = unnamed[0], unnamed[1:]
		}
	}
	for _, l := range unnamed {
		a.log.Warn("ignoring a socket from systemd beyond the three the agent serves", "address", l.Addr().String())
		l.Close()
	}
	s := &sockets{workload: byName[fdWorkload], admin: byName[fdAdmin], credentials: byName[fdCredentials]}
	for name, l := range byName {
		a.log.Info("using a socket from systemd", "name", name, "address", l.Addr().String())
	}
	fail := func(err error) (*sockets, error) { s.Close(); return nil, err }
	if s.workload == nil {
		if s.workload, err = listenUnix(a.cfg.WorkloadSocket, 0o666, -1); err != nil {
			return fail(err)
		}
	}
	if s.admin == nil {
		// Every local user may manage their own account, so the admin
		// socket is open to all by default and each request is authorised
		// by the caller's kernel credentials; admin_socket_mode = 0660
		// restricts it to root and the admin group.
		gid := a.adminGID
		if a.cfg.Dev || a.cfg.AdminSocketMode&0o006 != 0 {
			gid = -1
		}
		if s.admin, err = listenUnix(a.cfg.AdminSocket, a.cfg.AdminSocketMode, gid); err != nil {
			return fail(err)
		}
	}
	if s.credentials == nil && a.cfg.CredentialsSocket != "" {
		// Only the service manager (root) reads credentials.
		if s.credentials, err = listenUnix(a.cfg.CredentialsSocket, 0o600, -1); err != nil {
			return fail(err)
		}
	}
	return s, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// watchdog pings systemd at half of $WATCHDOG_USEC, while the agent's state
// lock can be taken: a deadlocked agent stops pinging and systemd restarts
// it. Without WatchdogSec= it returns at once.
func (a *Agent) watchdog(ctx context.Context) error {
	every, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		a.log.Warn("watchdog", "error", err)
		return nil
	}
	if every <= 0 {
		return nil
	}
	t := time.NewTicker(every / 2)
	defer t.Stop()
	a.log.Debug("watchdog on", "interval", every)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			a.mu.RLock()
			a.mu.RUnlock()
			a.notify(daemon.SdNotifyWatchdog)
		}
	}
}

// notifyStopping tells systemd the agent is stopping as soon as it starts
// to (a signal, or a part failing), not once everything has stopped.
func (a *Agent) notifyStopping(ctx context.Context) error {
	<-ctx.Done()
	a.watchers.closeAll()
	a.notify(daemon.SdNotifyStopping)
	return nil
}

// hupSignals is set up in Run before READY is sent, so a SIGHUP from
// systemd (ExecReload=, or Type=notify-reload) never meets the default
// action, which would end the agent.
func hupSignals() (chan os.Signal, func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, unix.SIGHUP)
	return ch, func() { signal.Stop(ch) }
}

// reloadOnHUP reloads the config on each SIGHUP until ctx ends.
func (a *Agent) reloadOnHUP(ctx context.Context, hup <-chan os.Signal) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			a.Reload()
		}
	}
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, as RELOADING=1 wants
// it beside (sd_notify(3), MONOTONIC_USEC=).
func monotonicUsec() uint64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Sec)*1e6 + uint64(ts.Nsec)/1e3
}

// Reload reads the config file again and applies what can change without
// reopening a socket or the store: the [defaults] section (every workload
// is resolved again, so mounts and watching launchers follow),
// log_level, max_value_bytes and account_var_limit. A changed key of any
// other kind is logged as needing a restart; a config that does not parse
// changes nothing. systemd is told RELOADING=1 before and READY=1 after,
// whatever the outcome. In -dev, and for an agent built without a config
// file, there is nothing to read.
func (a *Agent) Reload() error {
	a.notify("RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatUint(monotonicUsec(), 10))
	defer a.notify(daemon.SdNotifyReady)
	if a.cfg.reload == nil {
		a.log.Info("reload: no config file to read")
		return nil
	}
	next, err := a.cfg.reload()
	if err != nil {
		a.log.Error("reload failed; keeping the running config", "error", err)
		return err
	}
	restart := restartKeys(a.cfg, next)
	if len(restart) > 0 {
		a.log.Warn("reload: these settings change only on restart", "keys", restart)
	}
	var applied []string
	if next.LogLevel != a.liveLogLevel() {
		a.log.SetLevel(hclog.LevelFromString(next.LogLevel))
		a.logLevel.Store(&next.LogLevel)
		applied = append(applied, "log_level")
	}
	if next.MaxValueBytes != a.maxValueBytes() {
		a.limitValue.Store(int64(next.MaxValueBytes))
		applied = append(applied, "max_value_bytes")
	}
	if next.AccountVarLimit != a.accountVarLimit() {
		a.limitAccount.Store(int64(next.AccountVarLimit))
		applied = append(applied, "account_var_limit")
	}
	if next.Limits != a.limits() {
		a.liveLimits.Store(&next.Limits)
		applied = append(applied, "limits") // private_secret_limit … mount_bytes_limit (limits.go)
	}
	a.mu.Lock()
	if !reflect.DeepEqual(next.Defaults, a.cfg.Defaults) {
		a.cfg.Defaults = next.Defaults
		a.setPlatform()
		t := newTouched()
		t.all = true
		a.resolveTouched(t)
		applied = append(applied, "[defaults]")
	}
	a.mu.Unlock()
	a.log.Info("config reloaded", "applied", applied)
	return nil
}

// The settings a reload may change while requests run.
type liveSettings struct {
	limitValue   atomic.Int64           // max_value_bytes; 0: cfg's
	limitAccount atomic.Int64           // account_var_limit; 0: cfg's
	liveLimits   atomic.Pointer[Limits] // limits.go; nil: cfg's
	logLevel     atomic.Pointer[string]
}

func (a *Agent) maxValueBytes() int {
	if n := a.limitValue.Load(); n > 0 {
		return int(n)
	}
	return a.cfg.MaxValueBytes
}

func (a *Agent) accountVarLimit() int {
	if n := a.limitAccount.Load(); n > 0 {
		return int(n)
	}
	return a.cfg.AccountVarLimit
}

func (a *Agent) liveLogLevel() string {
	if p := a.logLevel.Load(); p != nil {
		return *p
	}
	return a.cfg.LogLevel
}
