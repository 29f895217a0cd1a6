package agent

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/envlet/envlet/agent/wire"
	"github.com/envlet/envlet/cache"
)

func TestCheckSecret(t *testing.T) {
	b64 := func(n int) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xff}, n)) }
	for _, tt := range []struct {
		name  string
		sname string
		value string
		file  bool
		code  string // "" = accepted
	}{
		{"Text9000", "S", strings.Repeat("x", 9000), false, ""},
		{"Text9001", "S", strings.Repeat("x", 9001), false, CodeSecretTooLarge},
		{"Runes9000", "S", strings.Repeat("€", 9000), false, ""}, // 27000 bytes, 9000 characters
		{"Runes9001", "S", strings.Repeat("€", 9001), false, CodeSecretTooLarge},
		{"Empty", "S", "", false, ""},
		{"Nul", "S", "a\x00b", false, CodeInvalidValue},
		{"File6750", "F", b64(6750), true, ""},
		{"File6751", "F", b64(6751), true, CodeSecretTooLarge},
		{"FileNotBase64", "F", "not base64!", true, CodeInvalidValue},
		{"FileUnpadded", "F", "YQ", true, CodeInvalidValue},
		{"FileNewline", "F", "YQ==\n", true, CodeInvalidValue},
		{"BadName", "1S", "v", false, CodeInvalidName},
		{"ReservedNameIsFine", "API_KEY", "v", false, ""}, // secrets are not env names
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := checkSecret(tt.sname, []byte(tt.value), tt.file)
			if tt.code == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || codeOf(err).Code != tt.code {
				t.Fatalf("got %v, want %s", err, tt.code)
			}
		})
	}
}

// FuzzCheckSecret: whatever the input, an error never holds the value,
// and an accepted file secret decodes.
func FuzzCheckSecret(f *testing.F) {
	f.Add("S", "canary-value", false)
	f.Add("F", "YWJj", true)
	f.Add("F", "YWJj\x00", true)
	f.Add("X", strings.Repeat("é", 9001), false)
	f.Fuzz(func(t *testing.T, name, value string, file bool) {
		err := checkSecret(name, []byte(value), file)
		if err != nil {
			msg := codeOf(err).Message
			if len(value) >= 4 && strings.Contains(msg, value) {
				t.Fatalf("error %q holds the value", msg)
			}
			return
		}
		if !validVarName(name) || strings.IndexByte(value, 0) >= 0 || utf8.RuneCountInString(value) > maxSecretChars {
			t.Fatalf("accepted %q (%d bytes)", name, len(value))
		}
		if file {
			if _, err := base64.StdEncoding.DecodeString(value); err != nil || strings.ContainsAny(value, "\r\n") {
				t.Fatalf("accepted a file secret that does not decode: %v", err)
			}
		}
	})
}

// TestSecretFor: in the account layer a workload's user's private secret
// wins over the project's, and only while the user is a member; in the
// project layer only the project's secret is reached (issue 11 §1).
func TestSecretFor(t *testing.T) {
	a := testAgent(t)
	m := a.model
	p := m.project("fraud")
	p.metaRev = 1
	p.meta.Members = []string{"alice"}
	m.userSecrets["alice"] = vars(a, "DB", "alice-db")
	m.userSecrets["carol"] = vars(a, "DB", "carol-db")
	m.projSecrets["fraud"] = vars(a, "DB", "project-db", "ONLY_P", "p")
	p.vars = varSet{
		"DB_PASSWORD": &variable{val: a.pool.Copy(append([]byte{flagFromRef | flagSecret}, "DB"...))},
		"MISSING":     &variable{val: a.pool.Copy(append([]byte{flagFromRef | flagSecret}, "NOPE"...))},
		"PLAIN":       &variable{val: a.pool.Copy(append([]byte{0}, "plain"...))},
	}
	for _, tt := range []struct{ layer, user, want string }{
		{layerAccount, "alice", "alice-db"},   // a member: her own
		{layerProject, "alice", "project-db"}, // the project layer: never a private one
		{layerAccount, "carol", "project-db"}, // not a member: the project's
		{layerAccount, "bob", "project-db"},   // no private one
	} {
		l := a.storedLayer(tt.layer, p.vars, tt.user, "fraud")
		got := map[string]layerVar{}
		for _, v := range l.vars {
			got[v.name] = v
		}
		if string(got["DB_PASSWORD"].value) != tt.want || !got["DB_PASSWORD"].secret {
			t.Errorf("%s: DB_PASSWORD = %q (secret %v), want %q, secret", tt.user, got["DB_PASSWORD"].value, got["DB_PASSWORD"].secret, tt.want)
		}
		if _, ok := got["MISSING"]; ok || len(l.leftOut) != 1 || l.leftOut[0].name != "MISSING" {
			t.Errorf("%s: a missing secret: vars %v, left out %v", tt.user, got, l.leftOut)
		}
		if string(got["PLAIN"].value) != "plain" {
			t.Errorf("%s: PLAIN = %q", tt.user, got["PLAIN"].value)
		}
	}
	if v, _ := a.secretFor("alice", "nope", "DB"); v != nil {
		t.Error("a secret was found for a project that does not exist")
	}
}

func TestAuditKeyFile(t *testing.T) {
	pool := cache.NewPool()
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "audit.key")
	k1, err := loadAuditKey(path, pool)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != auditKeySize {
		t.Fatalf("created key: %v %v", fi, err)
	}
	k2, err := loadAuditKey(path, pool)
	if err != nil || !bytes.Equal(k1.Bytes(), k2.Bytes()) {
		t.Fatalf("reloaded key differs: %v", err)
	}
	l := &auditLog{key: k1}
	if s := l.sum([]byte("v")); len(s) != 64 || s == l.sum([]byte("w")) {
		t.Fatalf("sum: %q", s)
	}
	os.Chmod(path, 0o640)
	if _, err := loadAuditKey(path, pool); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a group-readable key was accepted: %v", err)
	}
	os.WriteFile(path, []byte("short"), 0o600)
	os.Chmod(path, 0o600)
	if _, err := loadAuditKey(path, pool); err == nil || !strings.Contains(err.Error(), "32 bytes") {
		t.Errorf("a short key was accepted: %v", err)
	}
	// No log file: HMACs still work (the admin API uses them).
	nl, err := openAudit("", filepath.Join(dir, "k2"), pool)
	if err != nil || len(nl.sum([]byte("v"))) != 64 {
		t.Fatalf("audit without a file: %v", err)
	}
	nl.write(auditRecord{Action: "x"}, nil, "")
	nl.Close()
}

// BenchmarkAuditSums: the HMACs computed when a workload's environment
// changes (50 values of 32 bytes), the audit cost of one re-resolution.
func BenchmarkAuditSums(b *testing.B) {
	pool := cache.NewPool()
	l := &auditLog{key: pool.Copy(bytes.Repeat([]byte{7}, auditKeySize))}
	entries := make([]wire.Entry, 50)
	for i := range entries {
		entries[i] = wire.Entry{Name: "NAME_" + strings.Repeat("X", i%8) + string(rune('A'+i%26)) + string(rune('A'+i/26)), Value: bytes.Repeat([]byte{byte(i)}, 32)}
	}
	b.ReportAllocs()
	for b.Loop() {
		l.sums(entries)
	}
}
