package agent

import (
	"errors"
	"github.com/envlet/envlet/agent/internal/metrics"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// configKeys is every key of envletd.conf, declared once: ParseConfig sets
// fields through it, Reload names the changes that need a restart from it,
// and TestConfigKeysDocumented holds docs/configuration.md's config block to it.
// Adding a key is one row here (and its line in docs/configuration.md, which the test
// prints).
//
// live keys are applied by a SIGHUP reload (Reload); a change to any other
// needs a restart, and the reload says so by key name.
var configKeys = []configKey{
	key("state_dir", func(c *Config) *string { return &c.StateDir }, text, restart, "/var/lib/envlet", "state.enc + state.log: the encrypted store"),
	key("key_file", func(c *Config) *string { return &c.KeyFile }, text, restart, "/etc/envlet/keyring", "or $CREDENTIALS_DIRECTORY/envlet.keyring"),
	key("workload_socket", func(c *Config) *string { return &c.WorkloadSocket }, text, restart, "/run/envlet/workload.sock", `on a container host: /run/envlet/workload/workload.sock ("Containers")`),
	key("admin_socket", func(c *Config) *string { return &c.AdminSocket }, text, restart, "/run/envlet/admin.sock", ""),
	key("admin_socket_mode", func(c *Config) *os.FileMode { return &c.AdminSocketMode }, socketMode, restart, "0666", "0660: only root and admin_group may connect"),
	key("admin_group", func(c *Config) *string { return &c.AdminGroup }, text, restart, "envlet-admin", ""),
	key("credentials_socket", func(c *Config) *string { return &c.CredentialsSocket }, text, restart, "/run/envlet/credentials.sock", "systemd LoadCredential=; empty: none"),
	key("workloads_dir", func(c *Config) *string { return &c.WorkloadsDir }, text, restart, "/etc/envlet/workloads.d", ""),
	key("mount_dir", func(c *Config) *string { return &c.MountDir }, text, restart, "/run/envlet/mounts", `file-mounted env ("mount": true)`),
	key("audit_log", func(c *Config) *string { return &c.AuditLog }, text, restart, "/var/log/envlet/audit.log", ""),
	key("log_format", func(c *Config) *bool { return &c.LogJSON }, logFormat, restart, "text", "or json"),
	key("log_level", func(c *Config) *string { return &c.LogLevel }, text, live, "info", "trace, debug, info, warn or error"),
	key("max_value_bytes", func(c *Config) *int { return &c.MaxValueBytes }, count, live, "32768", ""),
	key("account_var_limit", func(c *Config) *int { return &c.AccountVarLimit }, count, live, "64", ""),
	key("private_secret_limit", func(c *Config) *int { return &c.Limits.PrivateSecrets }, limit, live, "100", "private secrets per user (limits.go)"),
	key("project_secret_limit", func(c *Config) *int { return &c.Limits.ProjectSecrets }, limit, live, "200", "secrets per project"),
	key("project_var_limit", func(c *Config) *int { return &c.Limits.ProjectVars }, limit, live, "500", "variables per project"),
	key("scope_bytes_limit", func(c *Config) *int { return &c.Limits.ScopeBytes }, limit, live, "1048576", "bytes of values a user's or a project's scope holds"),
	key("mount_bytes_limit", func(c *Config) *int { return &c.Limits.MountBytes }, limit, live, "4194304", "bytes one mount version may hold"),
	key("reserved", func(c *Config) *[]string { return &c.Reserved }, words, restart, strings.Join(DefaultReserved, " "), ""),
	key("protected_names", func(c *Config) *[]string { return &c.ProtectedNames }, words, restart, strings.Join(DefaultProtected, " "), ""),
	key("mlockall", func(c *Config) *bool { return &c.MlockAll }, boolean, restart, "false", "lock the whole process (needs CAP_IPC_LOCK)"),
	key("etcd_endpoints", func(c *Config) *[]string { return &c.EtcdEndpoints }, list, restart, "https://10.0.0.1:2379,https://10.0.0.2:2379", "etcd backend (else: local store)"),
	key("etcd_prefix", func(c *Config) *string { return &c.EtcdPrefix }, text, restart, "/envlet/", "every record under this prefix"),
	key("etcd_ca_file", func(c *Config) *string { return &c.EtcdCAFile }, text, restart, "/etc/envlet/etcd-ca.pem", "TLS: CA of the servers (empty: system roots)"),
	key("etcd_cert_file", func(c *Config) *string { return &c.EtcdCertFile }, text, restart, "/etc/envlet/etcd.pem", "TLS client certificate and key (both or neither)"),
	key("etcd_key_file", func(c *Config) *string { return &c.EtcdKeyFile }, text, restart, "/etc/envlet/etcd-key.pem", ""),
	key("etcd_timeout", func(c *Config) *time.Duration { return &c.EtcdTimeout }, duration(10*time.Minute, "10m"), restart, "5s", "bound on each etcd request"),
	key("token_dir", func(c *Config) *string { return &c.TokenDir }, text, restart, "/run/envlet/tokens", `workload token files ("token": true)`),
	key("container_engine", func(c *Config) *string { return &c.ContainerEngine }, text, restart, "unix:///run/podman/podman.sock", `labelled containers registered (docs/operations.md, "Containers registered by the engine"); unset: none`),
	key("request_timeout", func(c *Config) *time.Duration { return &c.RequestTimeout }, duration(time.Hour, "1h"), restart, "5s", "one workload request, connect to reply"),
	key("max_conns_per_uid", func(c *Config) *int { return &c.MaxConnsPerUID }, count, restart, "32", "per socket: a uid's connections before their request is in"),
	key("max_conns", func(c *Config) *int { return &c.MaxConns }, count, restart, "1024", "per socket: all connections"),
	key("max_runs_per_user", func(c *Config) *int { return &c.MaxRunsPerUser }, count, restart, "4", "envlet run: a user's runs at once"),
	key("metrics_listen", func(c *Config) *string { return &c.MetricsListen }, metricsListen, restart, "127.0.0.1:9464", "Prometheus /metrics: loopback or a socket path; off if unset"),
}

// notKeys are the fields of Config no key sets: the [defaults] section,
// the -dev mode, and the reload hook.
var notKeys = map[string]bool{"Defaults": true, "Dev": true, "DevAdminUID": true}

const (
	live    = true  // a SIGHUP reload applies the key
	restart = false // a change takes a restart
)

// configKey is one key of the config file.
type configKey struct {
	name    string
	field   func(*Config) any // a pointer to the field the key sets
	parse   func(c *Config, v string) error
	live    bool
	example string // the value docs/configuration.md shows
	doc     string // docs/configuration.md's comment on it, if any
}

// key builds a row: field points the key at its Config field, parse turns
// the file's text into its value.
func key[T any](name string, field func(*Config) *T, parse func(string) (T, error), live bool, example, doc string) configKey {
	return configKey{
		name:  name,
		field: func(c *Config) any { return field(c) },
		parse: func(c *Config, v string) error {
			x, err := parse(v)
			if err != nil {
				return err
			}
			*field(c) = x
			return nil
		},
		live:    live,
		example: example,
		doc:     doc,
	}
}

// lookupKey finds a key by name.
func lookupKey(name string) (configKey, bool) {
	for _, k := range configKeys {
		if k.name == name {
			return k, true
		}
	}
	return configKey{}, false
}

func (c *Config) set(k, v string) error {
	ck, ok := lookupKey(k)
	if !ok {
		return errors.New("unknown key")
	}
	return ck.parse(c, v)
}

// restartKeys names the keys whose values differ between two configs and
// that a reload does not apply, in table order.
func restartKeys(cur, next Config) []string {
	var out []string
	for _, k := range configKeys {
		if k.live {
			continue
		}
		a := reflect.ValueOf(k.field(&cur)).Elem().Interface()
		b := reflect.ValueOf(k.field(&next)).Elem().Interface()
		if !reflect.DeepEqual(a, b) {
			out = append(out, k.name)
		}
	}
	return out
}

// The value parsers of the table.

func text(v string) (string, error) { return v, nil }

func count(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 1<<20 {
		return 0, errors.New("want a whole number from 1 to 1048576")
	}
	return n, nil
}

// limit is a limit of limits.go: a count or a size in bytes.
func limit(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 1<<30 {
		return 0, errors.New("want a whole number from 1 to 1073741824")
	}
	return n, nil
}

// duration is from 100ms to most, which mostText spells as a person would.
func duration(most time.Duration, mostText string) func(string) (time.Duration, error) {
	return func(v string) (time.Duration, error) {
		d, err := time.ParseDuration(v)
		if err != nil || d < 100*time.Millisecond || d > most {
			return 0, errors.New("want a duration from 100ms to " + mostText + ", such as 5s")
		}
		return d, nil
	}
}

func boolean(v string) (bool, error) {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, errors.New("want true or false")
	}
	return b, nil
}

// words is a space-separated list; list also takes commas.
func words(v string) ([]string, error) { return strings.Fields(v), nil }

func list(v string) ([]string, error) { return strings.Fields(strings.ReplaceAll(v, ",", " ")), nil }

func logFormat(v string) (bool, error) {
	switch v {
	case "text":
		return false, nil
	case "json":
		return true, nil
	}
	return false, errors.New("want text or json")
}

// socketMode is an octal mode for the admin socket: read and write for its
// owner at least, no execute bits.
func socketMode(v string) (os.FileMode, error) {
	n, err := strconv.ParseUint(v, 8, 32)
	if err != nil || n&^0o666 != 0 || n&0o600 != 0o600 {
		return 0, errors.New("want an octal mode such as 0666 or 0660")
	}
	return os.FileMode(n), nil
}

// metricsListen accepts a loopback address or an absolute socket path.
func metricsListen(v string) (string, error) {
	if v == "" {
		return "", nil
	}
	return v, metrics.CheckListen(v)
}
