package fetch

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestKeyFileEdits(t *testing.T) {
	l1, _ := keyLine("k1-a")
	path := writeKeyFile(t, "# my ring\n"+l1, 0o600)
	ring := func() *Keyring {
		t.Helper()
		k, err := LoadKeyring(path, false)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	sealed := ring().Seal(nil, []byte("v"), "aad")

	second, err := AddKey(path, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := ring().IDs(); !slices.Equal(got, []string{"k1-a", second}) {
		t.Fatalf("after adding a secondary: %v", got)
	}
	third, err := AddKey(path, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := ring().IDs(); !slices.Equal(got, []string{third, "k1-a", second}) {
		t.Fatalf("after adding a primary: %v", got)
	}
	if err := PromoteKey(path, second); err != nil {
		t.Fatal(err)
	}
	if got := ring().IDs(); !slices.Equal(got, []string{second, third, "k1-a"}) {
		t.Fatalf("after promoting %s: %v", second, got)
	}
	for _, tt := range []struct {
		name string
		do   func() error
	}{
		{"PromoteUnknown", func() error { return PromoteKey(path, "nope") }},
		{"RemoveUnknown", func() error { return RemoveKey(path, "nope") }},
		{"RemovePrimary", func() error { return RemoveKey(path, second) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := os.ReadFile(path)
			if err := tt.do(); err == nil {
				t.Fatal("accepted")
			}
			if after, _ := os.ReadFile(path); string(after) != string(before) {
				t.Fatal("the key file changed")
			}
		})
	}
	if err := RemoveKey(path, third); err != nil {
		t.Fatal(err)
	}
	k := ring()
	if got := k.IDs(); !slices.Equal(got, []string{second, "k1-a"}) {
		t.Fatalf("after removing %s: %v", third, got)
	}
	if p, err := k.Open(nil, sealed, "aad"); err != nil || string(p) != "v" {
		t.Fatalf("the first key no longer opens its value: %v", err)
	}
	data, _ := os.ReadFile(path)
	fi, _ := os.Stat(path)
	if !strings.HasPrefix(string(data), "# my ring\n") || fi.Mode().Perm() != 0o600 {
		t.Fatalf("comment or mode lost: %v\n%s", fi.Mode(), strings.SplitN(string(data), "\n", 2)[0])
	}
}

// TestKeyringReplace: a Keyring that others hold picks up a reloaded ring,
// and a value under a key it lacks fails with ErrUnknownKey naming the id.
func TestKeyringReplace(t *testing.T) {
	l1, _ := keyLine("k1-a")
	l2, _ := keyLine("k2-b")
	old, _ := KeyringFromBytes([]byte(l1))
	both, _ := KeyringFromBytes([]byte(l2 + l1))
	sealed := both.Seal(nil, []byte("v"), "aad")
	_, err := old.Open(nil, sealed, "aad")
	if !errors.Is(err, ErrUnknownKey) || !strings.Contains(err.Error(), `"k2-b"`) {
		t.Fatalf("open with a ring that lacks the key: %v", err)
	}
	if id, ok := SealedKeyID(sealed); !ok || id != "k2-b" {
		t.Fatalf("SealedKeyID = %q, %v", id, ok)
	}
	old.Replace(both)
	if p, err := old.Open(nil, sealed, "aad"); err != nil || string(p) != "v" || old.PrimaryID() != "k2-b" {
		t.Fatalf("after Replace: %q %v", p, err)
	}
}
