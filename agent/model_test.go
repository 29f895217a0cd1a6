package agent

import (
	"path/filepath"
	"testing"

	"github.com/envlet/envlet/fetch"
)

// A sealed value is bound to its record key: moved to another scope or
// name, it does not open.
func TestSealedValueBoundToKey(t *testing.T) {
	a := testAgent(t)
	k, err := fetch.LoadKeyring(filepath.Join(t.TempDir(), "keyring"), true)
	if err != nil {
		t.Fatal(err)
	}
	a.keys = k
	sealed := a.sealVar(keyAcctVar("alice", "TOKEN"), []byte("canary-bound"), flagSecret)
	v, err := a.openVar(keyAcctVar("alice", "TOKEN"), sealed)
	if err != nil || string(v.value()) != "canary-bound" || !v.secret() {
		t.Fatalf("open at its own key: %v", err)
	}
	for _, other := range []string{keyAcctVar("bob", "TOKEN"), keyAcctVar("alice", "OTHER"), keyProjVar("alice", "TOKEN")} {
		if _, err := a.openVar(other, sealed); err == nil {
			t.Errorf("a value sealed for alice's TOKEN opened as %s", other)
		}
	}
}
