package agent

import (
	"reflect"
	"testing"
)

// TestLimitsConfig: the limit and protected-name keys parse, bad values
// are refused, and a reload applies them (no restart warning).
func TestLimitsConfig(t *testing.T) {
	c, err := ParseConfig([]byte("private_secret_limit = 3\nproject_secret_limit = 4\nproject_var_limit = 5\n" +
		"scope_bytes_limit = 6000\nmount_bytes_limit = 7000\nprotected_names = LD_* FOO\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Limits{3, 4, 5, 6000, 7000}); c.Limits != want {
		t.Errorf("limits %+v, want %+v", c.Limits, want)
	}
	if !reflect.DeepEqual(c.ProtectedNames, []string{"LD_*", "FOO"}) {
		t.Errorf("protected_names %v", c.ProtectedNames)
	}
	if d, _ := ParseConfig(nil); d.Limits != DefaultLimits || !reflect.DeepEqual(d.ProtectedNames, DefaultProtected) {
		t.Errorf("defaults: %+v %v", d.Limits, d.ProtectedNames)
	}
	for _, bad := range []string{"private_secret_limit = 0", "scope_bytes_limit = x", "mount_bytes_limit = -1"} {
		if _, err := ParseConfig([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	if keys := restartKeys(baseConfig(), c); len(keys) != 1 || keys[0] != "protected_names" {
		t.Errorf("restart keys %v, want only protected_names (limits reload)", keys)
	}
}

// TestProtectedRefused: the project and group layers refuse a protected
// name; prefixes match.
func TestProtectedRefused(t *testing.T) {
	a := testAgent(t)
	for _, n := range []string{"LD_PRELOAD", "LD_ANYTHING", "BASH_ENV", "GIT_SSH_COMMAND", "LUA_INIT_5_4", "PATH"} {
		if e := codeOf(a.checkNotProtected(layerProject, n)); e.Code != CodeProtectedName {
			t.Errorf("%s: %v", n, e)
		}
	}
	for _, n := range []string{"LD", "PYTHONUNBUFFERED", "TZ", "MY_PATH"} {
		if err := a.checkNotProtected("group", n); err != nil {
			t.Errorf("%s refused: %v", n, err)
		}
	}
}
