package main

import (
	"regexp"
	"strings"
	"testing"
)

// envFileErr is every error parseEnvFile may give: a line number, no text.
var envFileErr = regexp.MustCompile(`^line [0-9]+( is not NAME=VALUE with a valid NAME|: the value holds a NUL byte)$`)

func TestParseEnvFile(t *testing.T) {
	got, err := parseEnvFile([]byte("# c\n\nA=1\r\nexport B=\"two words\"\n  C = 'x'\nD=\nE=a=b\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"A": "1", "B": "two words", "C": " 'x'", "D": "", "E": "a=b"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	for _, bad := range []string{"secret-value-no-equals", "1A=x", "A B=x", "A=\x00"} {
		_, err := parseEnvFile([]byte("OK=1\n" + bad + "\n"))
		if err == nil || !strings.Contains(err.Error(), "line 2") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// FuzzParseEnvFile: the parser never fails with a piece of the file in its
// error (a line may be a value), and accepts only valid names.
func FuzzParseEnvFile(f *testing.F) {
	f.Add([]byte("A=1\nexport B='2'\n# c\n"))
	f.Add([]byte("SECRETVALUE\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseEnvFile(b)
		if err != nil {
			if !envFileErr.MatchString(err.Error()) {
				t.Fatalf("error quotes the input: %q", err)
			}
			return
		}
		for k, v := range m {
			if !validEnvName(k) || strings.IndexByte(v, 0) >= 0 {
				t.Fatalf("accepted %q", k)
			}
		}
	})
}
