package agent

import (
	"strings"
	"testing"
)

func TestCredentialPeer(t *testing.T) {
	for _, tt := range []struct {
		addr, unit, id string
		ok             bool
	}{
		{"@1a2b3c/unit/train.service/DB_PASSWORD", "train.service", "DB_PASSWORD", true},
		{"@0/unit/a@b.service/tls.key", "a@b.service", "tls.key", true},
		{"@ffffffffffffffff/unit/x.service/id", "x.service", "id", true},
		{"/run/x.sock", "", "", false},                          // a path, not abstract
		{"", "", "", false},                                     // unbound (autobind shows as @XXXXX)
		{"@0000a", "", "", false},                               // Linux autobind
		{"@1ffffffffffffffff/unit/x.service/id", "", "", false}, // hex too long
		{"@XYZ/unit/x.service/id", "", "", false},               // not hex
		{"@1a/units/x.service/id", "", "", false},               // not "unit"
		{"@1a/unit/x.service/", "", "", false},                  // no id
		{"@1a/unit/x.service/a/b", "", "", false},               // too many parts
		{"@1a/unit/not a unit/id", "", "", false},               // not a unit name
		{"@1a/unit/x.service/..", "", "", false},                // not a file name
		{"@1a/unit/x.service/bad\x01id", "", "", false},         // control byte
		{"@1a/unit/x.service/" + strings.Repeat("i", 256), "", "", false},
	} {
		unit, id, ok := credentialPeer(tt.addr)
		if ok != tt.ok || unit != tt.unit && ok || id != tt.id && ok {
			t.Errorf("credentialPeer(%q) = %q, %q, %v; want %q, %q, %v", tt.addr, unit, id, ok, tt.unit, tt.id, tt.ok)
		}
	}
}

// FuzzCredentialPeer: any peer address parses or is refused without a
// panic, and what parses names a unit and an id the agent can log.
func FuzzCredentialPeer(f *testing.F) {
	f.Add("@1a2b3c/unit/train.service/DB_PASSWORD")
	f.Add("@0/unit/a@b.service/tls.key")
	f.Add("@/unit//")
	f.Fuzz(func(t *testing.T, addr string) {
		unit, id, ok := credentialPeer(addr)
		if !ok {
			return
		}
		if !isUnitName(unit) || id == "" || strings.ContainsAny(id, "/\x00") || !strings.HasSuffix(addr, "/unit/"+unit+"/"+id) {
			t.Fatalf("credentialPeer(%q) = %q, %q", addr, unit, id)
		}
	})
}
