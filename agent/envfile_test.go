package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// Readers of the mount formats, for the tests only: each follows the real
// parser's rules (cited), so the fuzz target can check writer → reader for
// any value. The table test also checks the same files with the real
// parsers that exist here: systemd's own load_env_file (libsystemd-shared,
// through python3 ctypes), bash, and python3's json.

// parseSystemdEnv follows parse_env_file_internal in systemd's
// src/basic/env-file.c: comments (# ;) at the start of a line, KEY=VALUE
// with whitespace trimmed around the key and an unquoted value, single
// quotes literal, double quotes with \ escaping \ " $ ` (and a backslash
// before anything else kept), backslash-newline a continuation. A value
// that is not valid UTF-8 fails the file, as systemd does.
func parseSystemdEnv(b []byte) (map[string]string, error) {
	const (
		preKey = iota
		key
		preValue
		value
		valueEscape
		singleQuote
		doubleQuote
		doubleQuoteEscape
		comment
		commentEscape
	)
	out := map[string]string{}
	state := preKey
	var k, v []byte
	lastKeyWS, lastValueWS := -1, -1
	isWS := func(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
	isNL := func(c byte) bool { return c == '\n' || c == '\r' }
	push := func() error {
		if lastKeyWS >= 0 {
			k = k[:lastKeyWS]
		}
		if !utf8.Valid(k) || !utf8.Valid(v) {
			return errors.New("invalid UTF-8")
		}
		out[string(k)] = string(v)
		k, v = nil, nil
		return nil
	}
	for _, c := range b {
		switch state {
		case preKey:
			if c == '#' || c == ';' {
				state = comment
			} else if !isWS(c) {
				state = key
				lastKeyWS = -1
				k = append(k, c)
			}
		case key:
			if isNL(c) {
				state = preKey
				k = nil
			} else if c == '=' {
				state = preValue
				lastValueWS = -1
			} else {
				if !isWS(c) {
					lastKeyWS = -1
				} else if lastKeyWS < 0 {
					lastKeyWS = len(k)
				}
				k = append(k, c)
			}
		case preValue:
			switch {
			case isNL(c):
				state = preKey
				if err := push(); err != nil {
					return nil, err
				}
			case c == '\'':
				state = singleQuote
			case c == '"':
				state = doubleQuote
			case c == '\\':
				state = valueEscape
			case !isWS(c):
				state = value
				v = append(v, c)
			}
		case value:
			switch {
			case isNL(c):
				state = preKey
				if lastValueWS >= 0 {
					v = v[:lastValueWS]
				}
				if err := push(); err != nil {
					return nil, err
				}
			case c == '\\':
				state = valueEscape
				lastValueWS = -1
			default:
				if !isWS(c) {
					lastValueWS = -1
				} else if lastValueWS < 0 {
					lastValueWS = len(v)
				}
				v = append(v, c)
			}
		case valueEscape:
			state = value
			if !isNL(c) {
				v = append(v, c)
			}
		case singleQuote:
			if c == '\'' {
				state = preValue
			} else {
				v = append(v, c)
			}
		case doubleQuote:
			switch c {
			case '"':
				state = preValue
			case '\\':
				state = doubleQuoteEscape
			default:
				v = append(v, c)
			}
		case doubleQuoteEscape:
			state = doubleQuote
			switch {
			case c == '"' || c == '\\' || c == '`' || c == '$':
				v = append(v, c)
			case c != '\n':
				v = append(v, '\\', c)
			}
		case comment:
			if c == '\\' {
				state = commentEscape
			} else if isNL(c) {
				state = preKey
			}
		case commentEscape:
			if isNL(c) {
				state = preKey
			} else {
				state = comment
			}
		}
	}
	switch state {
	case preValue, value, valueEscape, singleQuote, doubleQuote, doubleQuoteEscape:
		if state == value && lastValueWS >= 0 {
			v = v[:lastValueWS]
		}
		if err := push(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// parseDockerEnv follows parseKeyValueFile in docker/cli opts/file.go:
// lines from a bufio.Scanner (64 KiB at most, a trailing \r dropped), the
// whole file refused when a line is not UTF-8, a BOM dropped from the first
// line, leading whitespace trimmed, # comments and empty lines skipped,
// NAME=VALUE split at the first '=', the value verbatim.
func parseDockerEnv(b []byte) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	first := true
	for sc.Scan() {
		line := sc.Bytes()
		if !utf8.Valid(line) {
			return nil, errors.New("invalid UTF-8")
		}
		if first {
			line = bytes.TrimPrefix(line, []byte{0xEF, 0xBB, 0xBF})
			first = false
		}
		s := strings.TrimLeftFunc(string(line), unicode.IsSpace)
		if s == "" || s[0] == '#' {
			continue
		}
		name, val, ok := strings.Cut(s, "=")
		name = strings.TrimLeft(name, " \t")
		if name == "" || strings.ContainsAny(name, " \t") {
			return nil, errors.New("bad variable name")
		}
		if !ok {
			return nil, errors.New("a name without a value takes the host's")
		}
		out[name] = val
	}
	return out, sc.Err()
}

// render writes vars in the three formats as a mount does.
func render(vars []mountVar) envFiles {
	var e envFiles
	e.env = make([]byte, 0, envSize(vars))
	e.docker = make([]byte, 0, dockerSize(vars))
	e.json = make([]byte, 0, jsonSize(vars))
	renderEnvFiles(&e, vars)
	return e
}

// renderSlow is renderEnvFiles without its fast path for plain values:
// every byte goes through the appenders' checks.
func renderSlow(vars []mountVar) envFiles {
	var e envFiles
	renderEnvFilesFast(&e, vars, func([]byte) bool { return false })
	return e
}

// sameFiles says how a and b differ ("" when they do not).
func sameFiles(a, b envFiles) string {
	switch {
	case !bytes.Equal(a.env, b.env):
		return fmt.Sprintf("env %q, want %q", clip(string(a.env)), clip(string(b.env)))
	case !bytes.Equal(a.docker, b.docker):
		return fmt.Sprintf("docker.env %q, want %q", clip(string(a.docker)), clip(string(b.docker)))
	case !bytes.Equal(a.json, b.json):
		return fmt.Sprintf("env.json %q, want %q", clip(string(a.json)), clip(string(b.json)))
	case fmt.Sprint(a.envSkip, a.dockerSkip, a.jsonSkip) != fmt.Sprint(b.envSkip, b.dockerSkip, b.jsonSkip):
		return fmt.Sprintf("skipped %v %v %v, want %v %v %v", a.envSkip, a.dockerSkip, a.jsonSkip, b.envSkip, b.dockerSkip, b.jsonSkip)
	}
	return ""
}

// TestEnvFormatsPlain: the fast path for plain values writes exactly what
// the appenders write, and every byte that is not plain takes the
// appenders.
func TestEnvFormatsPlain(t *testing.T) {
	values := []string{"", "plain", "with  spaces ", "a=b", "#x", "'single'", "~!@#%^&*()_+-={}[]|:;<>,.?/",
		strings.Repeat("z", dockerLineMax-2), strings.Repeat("z", dockerLineMax-1)}
	for _, v := range formatValues {
		values = append(values, v.value)
	}
	for c := range 256 {
		values = append(values, string([]byte{'x', byte(c), 'y'}))
	}
	for _, v := range values {
		vars := []mountVar{{"A", []byte("a")}, {"V", []byte(v)}, {"Z", []byte("z\n")}}
		if diff := sameFiles(render(vars), renderSlow(vars)); diff != "" {
			t.Errorf("value %q: %s", clip(v), diff)
		}
	}
}

// Values the formats must carry, or refuse, exactly.
var formatValues = []struct {
	name, value string
	env, docker, json/* carry */ bool
}{
	{"Plain", "plain", true, true, true},
	{"Spaces", "with  inner spaces", true, true, true},
	{"Edges", "  leading and trailing  ", true, true, true},
	{"Double", `say "hi"`, true, true, true},
	{"Single", `it's 'quoted'`, true, true, true},
	{"Dollar", `$HOME ${HOME} $(id) $`, true, true, true},
	{"Backtick", "`id` and ``", true, true, true},
	{"Backslash", `a\b\\c\n\t\$`, true, true, true},
	{"TrailingBackslash", `ends\`, true, true, true},
	{"Hash", "# not a comment", true, true, true},
	{"HashInside", "a #b", true, true, true},
	{"Equals", "a=b==c=", true, true, true},
	{"Semicolon", ";x", true, true, true},
	{"UTF8", "ünïcødé ✓ 日本語 🙂", true, true, true},
	{"Empty", "", true, true, true},
	{"Tab", "a\tb\t", true, true, true},
	{"Controls", "\x01\x1b[0m\x7f", true, true, true},
	{"CRInside", "a\rb", true, true, true},
	{"CREnd", "ab\r", true, false, true},
	{"Newline", "line1\nline2\n", true, false, true},
	{"BackslashNewline", "a\\\nb", true, false, true},
	{"OnlyNewline", "\n", true, false, true},
	{"Long", strings.Repeat("x", 60000), true, true, true},
	{"TooLongForDocker", strings.Repeat("y", 70000), true, false, true},
	{"InvalidUTF8", "bad \xff\xfe bytes", false, false, false},
}

func TestEnvFormats(t *testing.T) {
	var vars []mountVar
	for _, v := range formatValues {
		vars = append(vars, mountVar{v.name, []byte(v.value)})
	}
	sort.Slice(vars, func(i, j int) bool { return vars[i].name < vars[j].name })
	e := render(vars)
	skipped := func(list []string) map[string]bool {
		m := map[string]bool{}
		for _, n := range list {
			m[n] = true
		}
		return m
	}
	envSkip, dockerSkip, jsonSkip := skipped(e.envSkip), skipped(e.dockerSkip), skipped(e.jsonSkip)

	env, err := parseSystemdEnv(e.env)
	if err != nil {
		t.Fatalf("read env: %v", err)
	}
	docker, err := parseDockerEnv(e.docker)
	if err != nil {
		t.Fatalf("read docker.env: %v", err)
	}
	var js map[string]string
	if err := json.Unmarshal(e.json, &js); err != nil {
		t.Fatalf("read env.json: %v\n%s", err, e.json)
	}
	real := realParsers(t, e)
	t.Logf("real parsers: %v", sortedKeys(real))
	for _, v := range formatValues {
		t.Run(v.name, func(t *testing.T) {
			check := func(format string, carry, skip bool, got map[string]string) {
				t.Helper()
				g, ok := got[v.name]
				switch {
				case carry && skip:
					t.Errorf("%s: listed as skipped but the format carries it", format)
				case !carry && !skip:
					t.Errorf("%s: not listed as skipped", format)
				case carry && (!ok || g != v.value):
					t.Errorf("%s: read back %q (present %v), want %q", format, clip(g), ok, clip(v.value))
				case !carry && ok:
					t.Errorf("%s: a value it cannot carry was written", format)
				}
			}
			check("env", v.env, envSkip[v.name], env)
			check("docker.env", v.docker, dockerSkip[v.name], docker)
			check("env.json", v.json, jsonSkip[v.name], js)
			for parser, got := range real {
				if parser == "python3 json" {
					check(parser, v.json, jsonSkip[v.name], got)
				} else {
					check(parser, v.env, envSkip[v.name], got)
				}
			}
		})
	}
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// realParsers reads e with the real parsers this machine has.
func realParsers(t *testing.T, e envFiles) map[string]map[string]string {
	dir := t.TempDir()
	for name, b := range map[string][]byte{"env": e.env, "env.json": e.json} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	names := make([]string, 0, len(formatValues))
	for _, v := range formatValues {
		names = append(names, v.name)
	}
	out := map[string]map[string]string{}
	// Each prints NAME=VALUE records separated by NUL bytes.
	read := func(parser string, cmd *exec.Cmd) {
		b, err := cmd.Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("%s: %v\n%s", parser, err, stderr)
		}
		m := map[string]string{}
		for _, rec := range bytes.Split(b, []byte{0}) {
			if k, v, ok := bytes.Cut(rec, []byte("=")); ok {
				m[string(k)] = string(v)
			}
		}
		out[parser] = m
	}
	// bash: the env file sourced with set -a, each variable printed back.
	cmd := exec.Command("bash", append([]string{"-c", `set -a; . "$1" || exit 1; shift; for n; do [ -n "${!n+set}" ] && printf '%s=%s\0' "$n" "${!n}"; done; true`, "bash", filepath.Join(dir, "env")}, names...)...)
	read("bash", cmd)
	if _, err := exec.LookPath("python3"); err != nil {
		t.Log("python3 not installed: json and systemd's own parser not checked")
		return out
	}
	read("python3 json", exec.Command("python3", "-c", `
import json, sys
for k, v in json.load(open(sys.argv[1], encoding="utf-8")).items():
    sys.stdout.buffer.write(k.encode() + b"=" + v.encode("utf-8", "surrogatepass") + b"\0")
`, filepath.Join(dir, "env.json")))
	// systemd's EnvironmentFile= parser itself, from libsystemd-shared.
	libs, _ := filepath.Glob("/usr/lib/*/systemd/libsystemd-shared-*.so")
	if len(libs) == 0 {
		t.Log("libsystemd-shared not installed: systemd's own parser not checked")
		return out
	}
	read("systemd load_env_file", exec.Command("python3", "-c", `
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
ret = ctypes.POINTER(ctypes.c_char_p)()
r = lib.load_env_file(None, sys.argv[2].encode(), ctypes.byref(ret))
if r < 0:
    sys.exit("load_env_file: error %d" % r)
i = 0
while ret[i]:
    sys.stdout.buffer.write(ret[i] + b"\0")
    i += 1
`, libs[0], filepath.Join(dir, "env")))
	return out
}

// FuzzEnvFormats: whatever a value, each format either reads back exactly
// that value or says it cannot carry it; and a format refuses only what
// its reader cannot take.
func FuzzEnvFormats(f *testing.F) {
	for _, v := range formatValues {
		if len(v.value) < 1000 {
			f.Add(v.value)
		}
	}
	f.Fuzz(func(t *testing.T, value string) {
		if strings.IndexByte(value, 0) >= 0 {
			return // refused by every write path
		}
		vars := []mountVar{{"A", []byte("before")}, {"V", []byte(value)}, {"Z", []byte("after")}}
		e := render(vars)
		if diff := sameFiles(e, renderSlow(vars)); diff != "" {
			t.Fatalf("the fast path differs: %s", diff)
		}
		checks := []struct {
			format string
			skip   []string
			read   func([]byte) (map[string]string, error)
			data   []byte
			can    bool
		}{
			{"env", e.envSkip, parseSystemdEnv, e.env, utf8.ValidString(value)},
			{"docker.env", e.dockerSkip, parseDockerEnv, e.docker, utf8.ValidString(value) && !strings.Contains(value, "\n") && !strings.HasSuffix(value, "\r") && len("V=")+len(value) <= dockerLineMax},
			{"env.json", e.jsonSkip, func(b []byte) (map[string]string, error) {
				var m map[string]string
				return m, json.Unmarshal(b, &m)
			}, e.json, utf8.ValidString(value)},
		}
		for _, c := range checks {
			got, err := c.read(c.data)
			if err != nil {
				t.Fatalf("%s: read: %v", c.format, err)
			}
			if got["A"] != "before" || got["Z"] != "after" {
				t.Fatalf("%s: the neighbours changed: %q %q", c.format, got["A"], got["Z"])
			}
			skipped := len(c.skip) == 1 && c.skip[0] == "V"
			if skipped == c.can {
				t.Fatalf("%s: skipped %v for a value it can carry: %v", c.format, skipped, c.can)
			}
			if v, ok := got["V"]; !skipped && (!ok || v != value) {
				t.Fatalf("%s: read back %q, want %q", c.format, v, value)
			} else if skipped && ok {
				t.Fatalf("%s: skipped but present", c.format)
			}
		}
	})
}

func TestEnvFormatsEmpty(t *testing.T) {
	e := render(nil)
	if string(e.json) != "{}\n" || len(e.env) != 0 || len(e.docker) != 0 {
		t.Fatalf("empty: env %q docker %q json %q", e.env, e.docker, e.json)
	}
}
