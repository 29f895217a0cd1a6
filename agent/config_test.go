package agent

import (
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig([]byte(`
# comment
state_dir = /srv/envlet
log_format = json
max_value_bytes = 1024
account_var_limit = 10
reserved = API_KEY SECRET_*
mlockall = true
[defaults]
PATH = /usr/bin:/bin
QUOTED = "  a \"b\"  "
EMPTY =
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.StateDir != "/srv/envlet" || !c.LogJSON || c.MaxValueBytes != 1024 || c.AccountVarLimit != 10 || !c.MlockAll {
		t.Fatalf("parsed %+v", c)
	}
	r := NewReserved(c.Reserved)
	if !r.Has("API_KEY") || !r.Has("SECRET_X") || r.Has("PROJECT_ID") {
		t.Fatal("reserved list not applied")
	}
	want := []Default{{"PATH", "/usr/bin:/bin"}, {"QUOTED", `  a "b"  `}, {"EMPTY", ""}}
	if len(c.Defaults) != 3 || c.Defaults[0] != want[0] || c.Defaults[1] != want[1] || c.Defaults[2] != want[2] {
		t.Fatalf("defaults %q", c.Defaults)
	}
	for _, tt := range []struct{ name, in, err string }{
		{"UnknownKey", "stat_dir = /x", "line 1: stat_dir: unknown key"},
		{"UnknownSection", "[other]", "unknown section"},
		{"NoEquals", "state_dir /x", "want key = value"},
		{"BadNumber", "max_value_bytes = lots", "whole number"},
		{"BadDefaultName", "[defaults]\n1X = y", "line 2: invalid variable name"},
		{"Twice", "state_dir = /a\nstate_dir = /b", "set twice"},
		{"DefaultTwice", "[defaults]\nA = 1\nA = 2", "defined twice"},
		{"Nul", "state_dir = /a\x00", "NUL"},
		{"BadQuote", `[defaults]` + "\nA = \"x\\q\"", "bad quoted value"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("err = %v, want %q", err, tt.err)
			}
		})
	}
}

// The config error for a [defaults] line never echoes its value.
func TestParseConfigErrorHidesValue(t *testing.T) {
	_, err := ParseConfig([]byte("[defaults]\nA = \"canary-cfg\\q\"\n"))
	if err == nil || strings.Contains(err.Error(), "canary-cfg") {
		t.Fatalf("err = %v", err)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("state_dir = /x\n[defaults]\nPATH = /bin\n"))
	f.Add([]byte("reserved = A B_*\nmlockall = true\n"))
	f.Add([]byte("[defaults]\nQ = \"a\\nb\"\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			return
		}
		for _, d := range c.Defaults {
			if !validVarName(d.Name) || strings.IndexByte(d.Value, 0) >= 0 {
				t.Fatalf("accepted default %q", d.Name)
			}
		}
	})
}

func FuzzParseRegistration(f *testing.F) {
	f.Add([]byte(`{"id":"train-42","user":"alice","project":"fraud","match":{"uid":1001},"runtime":{"LR":"0.1","WANDB_MODE":""},"execution":{"SEED":"7"},"mount":false}`))
	f.Add([]byte(`{"id":"x","user":"u","project":"p","match":{"gid":5}}`))
	f.Add([]byte(`{"id":"x","user":"u","project":"p","match":{}}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseRegistration(b)
		if err != nil {
			if e := codeOf(err); e.Code == CodeInternal {
				t.Fatalf("error without a code: %v", err)
			}
			return
		}
		if !validIdent(r.ID) || !validIdent(r.User) || !validIdent(r.Project) {
			t.Fatalf("accepted invalid names %q %q %q", r.ID, r.User, r.Project)
		}
		for n := range r.Runtime {
			if !validVarName(n) {
				t.Fatalf("accepted runtime name %q", n)
			}
		}
	})
}

func TestValidNames(t *testing.T) {
	for name, ok := range map[string]bool{
		"A": true, "_": true, "a_1": true, "1A": false, "": false, "A-B": false, "A B": false,
		strings.Repeat("A", 256): true, strings.Repeat("A", 257): false, "É": false,
	} {
		if validVarName(name) != ok {
			t.Errorf("validVarName(%q) = %v", name, !ok)
		}
	}
	for name, ok := range map[string]bool{
		"alice": true, "a.b-c_d@e": true, "../x": false, "a/b": false, ".x": false, "-x": false, "": false,
	} {
		if validIdent(name) != ok {
			t.Errorf("validIdent(%q) = %v", name, !ok)
		}
	}
}
