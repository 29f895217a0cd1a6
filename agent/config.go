package agent

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/envlet/envlet/agent/internal/selfrun"
)

// DefaultConfigPath is where a production agent reads its config.
const DefaultConfigPath = "/etc/envlet/envletd.conf"

// Config is everything the agent needs to start. LoadConfig fills it from
// flags and the config file; tests may build one directly.
type Config struct {
	StateDir          string
	KeyFile           string
	WorkloadSocket    string
	AdminSocket       string
	CredentialsSocket string
	WorkloadsDir      string
	MountDir          string
	AuditLog          string
	AdminGroup        string
	AdminSocketMode   os.FileMode
	TokenDir          string // workload token files (token.go)
	// ContainerEngine, unix:///path, is a Docker Engine API socket whose
	// labelled containers are registered (engine.go); "" for none.
	ContainerEngine string

	// Bounds on what a peer can hold (server.go): connections at once on
	// each socket, in all and per uid, and the time one workload request
	// may take from connect to reply.
	MaxConns       int
	MaxConnsPerUID int
	RequestTimeout time.Duration
	// MaxRunsPerUser bounds the self-service runs (envlet run) one user
	// holds at once (admin_run.go).
	MaxRunsPerUser int

	LogJSON  bool
	LogLevel string

	MaxValueBytes   int
	AccountVarLimit int
	Reserved        []string
	MlockAll        bool

	// ProtectedNames are the code-loading names that the project and group
	// layers may not set (protect.go); Limits bound what non-admins store
	// (limits.go).
	ProtectedNames []string
	Limits         Limits

	// Defaults is the platform layer, in file order.
	Defaults []Default

	// Dev runs without root and without a config: everything under StateDir,
	// sockets open to every local user, DevAdminUID an admin.
	Dev         bool
	DevAdminUID int

	EtcdEndpoints []string
	EtcdPrefix    string
	// TLS to etcd: the CA of the servers' certificates (empty: the system
	// roots) and a client certificate and key (both or neither).
	EtcdCAFile, EtcdCertFile, EtcdKeyFile string
	// EtcdTimeout bounds every etcd request; past it a write fails with
	// BACKEND_UNAVAILABLE.
	EtcdTimeout time.Duration

	// MetricsListen serves Prometheus metrics (metrics.go): a loopback
	// HOST:PORT or a Unix socket path; "" (the default) serves none.
	MetricsListen string
	etcdObserve   func(time.Duration) // told each etcd request's time (metrics.go)

	// reload reads the config again as LoadConfig did (file, then flags);
	// nil in -dev and for a Config built by hand.
	reload func() (Config, error)
}

// Default is one platform default from the [defaults] section.
type Default struct{ Name, Value string }

// baseConfig is the production layout of docs/design.md §4.
func baseConfig() Config {
	return Config{
		StateDir:          "/var/lib/envlet",
		KeyFile:           "/etc/envlet/keyring",
		WorkloadSocket:    "/run/envlet/workload.sock",
		AdminSocket:       "/run/envlet/admin.sock",
		CredentialsSocket: "/run/envlet/credentials.sock",
		WorkloadsDir:      "/etc/envlet/workloads.d",
		MountDir:          "/run/envlet/mounts",
		AuditLog:          "/var/log/envlet/audit.log",
		AdminGroup:        "envlet-admin",
		AdminSocketMode:   0o666,
		TokenDir:          "/run/envlet/tokens",
		MaxConns:          1024,
		MaxConnsPerUID:    32,
		RequestTimeout:    5 * time.Second,
		LogLevel:          "info",
		MaxValueBytes:     32 << 10,
		AccountVarLimit:   64,
		Reserved:          DefaultReserved,
		ProtectedNames:    DefaultProtected,
		Limits:            DefaultLimits,
		EtcdPrefix:        "/envlet/",
		EtcdTimeout:       5 * time.Second,
		DevAdminUID:       -1,
		MaxRunsPerUser:    selfrun.DefaultMaxPerUser,
	}
}

// devConfig lays everything out under dir (docs/design.md §4, envletd -dev).
func devConfig(dir string) Config {
	c := baseConfig()
	c.Dev = true
	c.StateDir = filepath.Join(dir, "state")
	c.KeyFile = filepath.Join(dir, "keyring")
	c.WorkloadSocket = filepath.Join(dir, "workload.sock")
	c.AdminSocket = filepath.Join(dir, "admin.sock")
	c.CredentialsSocket = filepath.Join(dir, "credentials.sock")
	c.WorkloadsDir = filepath.Join(dir, "workloads.d")
	c.MountDir = filepath.Join(dir, "mounts")
	c.AuditLog = filepath.Join(dir, "audit.log")
	c.TokenDir = filepath.Join(dir, "tokens")
	c.DevAdminUID = os.Getuid()
	c.Defaults = []Default{{"PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}}
	return c
}

// LoadConfig parses envletd's flags and, unless -dev, its config file.
func LoadConfig(args []string, stderr io.Writer) (Config, error) {
	fs := flag.NewFlagSet("envletd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		path       = fs.String("config", "", "config file (default "+DefaultConfigPath+")")
		dev        = fs.Bool("dev", false, "development mode: no config, no root, everything under -dir")
		dir        = fs.String("dir", "", "with -dev: the directory for state, key and sockets (default: a new temporary directory)")
		etcd       = fs.String("etcd", "", "etcd endpoints URL[,URL...]: use the etcd backend")
		etcdPrefix = fs.String("etcd-prefix", "", "key prefix in etcd")
		keyFile    = fs.String("key-file", "", "encryption key ring (created with a fresh key if missing)")
		logJSON    = fs.Bool("log-json", false, "log JSON lines")
		logLevel   = fs.String("log-level", "", "trace, debug, info, warn or error")
	)
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var c Config
	switch {
	case *dev:
		if *path != "" {
			return Config{}, errors.New("-dev takes no -config")
		}
		d := *dir
		if d == "" {
			var err error
			if d, err = os.MkdirTemp("", "envlet-dev-"); err != nil {
				return Config{}, fmt.Errorf("create dev directory: %w", err)
			}
			// Other local users must reach the sockets inside; state and
			// key stay private in their own 0700 directory and 0600 file.
			if err := os.Chmod(d, 0o755); err != nil {
				return Config{}, fmt.Errorf("create dev directory: %w", err)
			}
		} else if err := os.MkdirAll(d, 0o755); err != nil {
			return Config{}, fmt.Errorf("create dev directory: %w", err)
		}
		abs, err := filepath.Abs(d)
		if err != nil {
			return Config{}, fmt.Errorf("dev directory: %w", err)
		}
		c = devConfig(abs)
	case *dir != "":
		return Config{}, errors.New("-dir goes with -dev")
	default:
		p := *path
		if p == "" {
			p = DefaultConfigPath
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return Config{}, fmt.Errorf("read config: %w", err)
		}
		if c, err = ParseConfig(b); err != nil {
			return Config{}, fmt.Errorf("config %s: %w", p, err)
		}
	}
	if *etcd != "" {
		c.EtcdEndpoints = strings.Split(*etcd, ",")
	}
	if *etcdPrefix != "" {
		c.EtcdPrefix = *etcdPrefix
	}
	if *keyFile != "" {
		c.KeyFile = *keyFile
	}
	if *logJSON {
		c.LogJSON = true
	}
	if *logLevel != "" {
		c.LogLevel = *logLevel
	}
	if !c.Dev {
		c.reload = func() (Config, error) { return LoadConfig(args, io.Discard) }
	}
	return c, nil
}

// ParseConfig reads the config file format: `key = value` lines, `#`
// comments, and a `[defaults]` section whose lines are platform defaults
// (`NAME = value`; a value may be double-quoted to keep spaces at its ends).
// Unknown keys are errors, so a typo is not silently ignored.
func ParseConfig(b []byte) (Config, error) {
	c := baseConfig()
	if len(b) > 1<<20 {
		return c, errors.New("config is over 1 MiB")
	}
	if bytes.IndexByte(b, 0) >= 0 {
		return c, errors.New("config contains a NUL byte")
	}
	section := ""
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if line[0] == '[' {
			if line != "[defaults]" {
				return c, fmt.Errorf("line %d: unknown section (only [defaults] exists)", n)
			}
			section = "defaults"
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return c, fmt.Errorf("line %d: want key = value", n)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			uq, err := strconv.Unquote(v)
			if err != nil {
				return c, fmt.Errorf("line %d: bad quoted value", n)
			}
			v = uq
		}
		if section == "defaults" {
			if !validVarName(k) {
				return c, fmt.Errorf("line %d: invalid variable name", n)
			}
			if strings.IndexByte(v, 0) >= 0 {
				return c, fmt.Errorf("line %d: value of %s contains a NUL byte", n, k)
			}
			if seen["defaults."+k] {
				return c, fmt.Errorf("line %d: %s defined twice", n, k)
			}
			seen["defaults."+k] = true
			c.Defaults = append(c.Defaults, Default{k, v})
			continue
		}
		if seen[k] {
			return c, fmt.Errorf("line %d: %s set twice", n, k)
		}
		seen[k] = true
		if err := c.set(k, v); err != nil {
			return c, fmt.Errorf("line %d: %s: %w", n, k, err)
		}
	}
	if err := sc.Err(); err != nil {
		return c, fmt.Errorf("read config: %w", err)
	}
	return c, nil
}
