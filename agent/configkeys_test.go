package agent

import (
	"bytes"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// TestConfigKeysCoverConfig: every exported field of Config is set by
// exactly one key (or is one of notKeys), so a field added without a row
// fails here rather than going unnamed in the reload warning.
func TestConfigKeysCoverConfig(t *testing.T) {
	t.Parallel()
	var c Config
	byAddr := map[uintptr]string{}
	for _, k := range configKeys {
		p := reflect.ValueOf(k.field(&c)).Pointer()
		if other, ok := byAddr[p]; ok {
			t.Errorf("keys %s and %s set the same field", other, k.name)
		}
		byAddr[p] = k.name
	}
	cv := reflect.ValueOf(&c).Elem()
	for i := 0; i < cv.NumField(); i++ {
		f := cv.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		_, isKey := byAddr[cv.Field(i).Addr().Pointer()]
		if isKey == notKeys[f.Name] {
			t.Errorf("Config.%s: want exactly one of a row in configKeys or an entry in notKeys", f.Name)
		}
	}
}

// mutate changes the field k sets in c to another value of its type.
func mutate(t *testing.T, k configKey, c *Config) {
	t.Helper()
	v := reflect.ValueOf(k.field(c)).Elem()
	before := v.Interface()
	switch {
	case v.Kind() == reflect.Bool:
		v.SetBool(!v.Bool())
	case !v.IsZero():
		v.Set(reflect.Zero(v.Type()))
	default:
		if err := k.parse(c, k.example); err != nil {
			t.Fatalf("%s: example %q: %v", k.name, k.example, err)
		}
	}
	if reflect.DeepEqual(before, v.Interface()) {
		t.Fatalf("%s: could not change its value", k.name)
	}
}

// TestRestartKeysNameRealKeys: a change to each key alone is named by that
// key (one the config file accepts) when a reload cannot apply it, and not
// at all when it can. The old warning derived names from field names and
// said log_json and mlock_all, which no config file may contain.
func TestRestartKeysNameRealKeys(t *testing.T) {
	t.Parallel()
	for _, k := range configKeys {
		cur, next := baseConfig(), baseConfig()
		mutate(t, k, &next)
		got := restartKeys(cur, next)
		want := []string{k.name}
		if k.live {
			want = nil
		}
		if !slices.Equal(got, want) {
			t.Errorf("a change to %s: restartKeys = %q, want %q", k.name, got, want)
		}
		if _, err := ParseConfig([]byte(k.name + " = " + k.example + "\n")); err != nil {
			t.Errorf("%s = %s does not parse: %v", k.name, k.example, err)
		}
	}
}

func TestRestartKeys(t *testing.T) {
	t.Parallel()
	cur := baseConfig()
	next := baseConfig()
	next.Defaults = []Default{{"A", "1"}}
	next.LogLevel = "debug"
	next.MaxValueBytes = 10
	next.AccountVarLimit = 3
	if got := restartKeys(cur, next); len(got) != 0 {
		t.Fatalf("reloadable changes reported as needing a restart: %v", got)
	}
	next.WorkloadSocket = "/elsewhere.sock"
	next.LogJSON = true
	next.MlockAll = true
	if got := restartKeys(cur, next); !slices.Equal(got, []string{"workload_socket", "log_format", "mlockall"}) {
		t.Fatalf("restartKeys = %v", got)
	}
}

// TestReloadWarnsRealKeys: SIGHUP's warning, as logged, names log_format
// and mlockall for a config file that changes them.
func TestReloadWarnsRealKeys(t *testing.T) {
	a := apiAgent(t)
	var logs bytes.Buffer
	a.log = hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})
	a.cfg.reload = func() (Config, error) {
		return ParseConfig([]byte(fmt.Sprintf("state_dir = %s\nkey_file = %s\ntoken_dir = %s\nmount_dir = %s\nworkloads_dir = %s\naudit_log = %s\nlog_format = json\nmlockall = true\n",
			a.cfg.StateDir, a.cfg.KeyFile, a.cfg.TokenDir, a.cfg.MountDir, a.cfg.WorkloadsDir, a.cfg.AuditLog)))
	}
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if !strings.Contains(out, `keys=["log_format", "mlockall"]`) {
		t.Fatalf("reload log does not name log_format and mlockall (alone):\n%s", out)
	}
}

// TestConfigKeysDocumented: docs/configuration.md's config file block lists every key,
// in table order, with its example and comment; on a mismatch it prints the
// block to paste.
func TestConfigKeysDocumented(t *testing.T) {
	t.Parallel()
	var want strings.Builder
	for _, k := range configKeys {
		line := fmt.Sprintf("%-18s = %-26s", k.name, k.example)
		if k.doc != "" {
			line += " # " + k.doc
		}
		want.WriteString(strings.TrimRight(line, " ") + "\n")
	}
	b, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(b), "### Config file")
	if ok {
		_, block, ok = strings.Cut(block, "```ini\n")
	}
	if ok {
		block, _, ok = strings.Cut(block, "\n[defaults]")
	}
	if !ok {
		t.Fatal("docs/configuration.md has no ```ini block with [defaults] under ### Config file")
	}
	if got := strings.TrimRight(block, "\n") + "\n"; got != want.String() {
		t.Fatalf("docs/configuration.md's config block differs from configKeys; want:\n%s", want.String())
	}
}
