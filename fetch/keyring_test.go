package fetch

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// keyLine returns a key file line with a random key, and the base64 key.
func keyLine(id string) (line, b64 string) {
	var raw [KeySize]byte
	rand.Read(raw[:])
	b64 = base64.StdEncoding.EncodeToString(raw[:])
	return id + " " + b64 + "\n", b64
}

func writeKeyFile(t *testing.T, content string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	return path
}

func TestKeyringCreateAndReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "envlet.key")
	k, err := LoadKeyring(path, true)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if !regexp.MustCompile(`^k1-[0-9a-f]{8}$`).MatchString(k.PrimaryID()) {
		t.Errorf("PrimaryID %q, want k1-<8 hex>", k.PrimaryID())
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %04o, want 0600", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("key dir holds %d entries, want only the key file", len(entries))
	}

	sealed := k.Seal(nil, []byte("hunter2"), "u/alice/v/DB_PASSWORD")
	// The file as written loads, and opens what the new ring sealed.
	k2, err := LoadKeyring(path, false)
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	if k2.PrimaryID() != k.PrimaryID() {
		t.Fatalf("reloaded primary %q, want %q", k2.PrimaryID(), k.PrimaryID())
	}
	got, err := k2.Open(nil, sealed, "u/alice/v/DB_PASSWORD")
	if err != nil || string(got) != "hunter2" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	// create on an existing file loads it rather than replacing it.
	k3, err := LoadKeyring(path, true)
	if err != nil || k3.PrimaryID() != k.PrimaryID() {
		t.Fatalf("LoadKeyring(existing, create) = %v, %v; want the existing key", k3, err)
	}
}

func TestKeyringCreateRace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "envlet.key")
	const n = 16
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := LoadKeyring(path, true)
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = k.PrimaryID()
		}()
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("concurrent creators disagree: %v", ids)
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("key dir holds %d entries, want only the key file", len(entries))
	}
}

func TestKeyringMissing(t *testing.T) {
	_, err := LoadKeyring(filepath.Join(t.TempDir(), "none"), false)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want ErrNotExist", err)
	}
	_, err = LoadKeyring(filepath.Join(t.TempDir(), "no-such-dir", "key"), true)
	if err == nil {
		t.Fatal("create in a missing directory succeeded")
	}
}

func TestKeyringSealOpen(t *testing.T) {
	line, _ := keyLine("k1-00000001")
	k, err := KeyringFromBytes([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	plain := []byte("canary-5f1b3c plaintext")
	const aad = "s/p/fraud/STRIPE_KEY"
	sealed := k.Seal([]byte("prefix"), plain, aad)
	if !bytes.HasPrefix(sealed, []byte("prefix")) {
		t.Fatal("Seal did not append to dst")
	}
	sealed = sealed[len("prefix"):]
	if want := 1 + len("k1-00000001") + nonceSize + len(plain) + tagSize; len(sealed) != want {
		t.Fatalf("sealed length %d, want %d", len(sealed), want)
	}
	if sealed[0] != byte(len("k1-00000001")) || string(sealed[1:12]) != "k1-00000001" {
		t.Fatalf("sealed header %q", sealed[:12])
	}
	if bytes.Contains(sealed, plain) {
		t.Fatal("sealed value holds the plaintext")
	}
	if n, err := PlaintextLen(sealed); err != nil || n != len(plain) {
		t.Fatalf("PlaintextLen = %d, %v", n, err)
	}
	if again := k.Seal(nil, plain, aad); bytes.Equal(again, sealed) {
		t.Fatal("two seals are equal: nonce not random")
	}
	got, err := k.Open([]byte("x"), sealed, aad)
	if err != nil || string(got) != "x"+string(plain) {
		t.Fatalf("Open = %q, %v", got, err)
	}
	empty := k.Seal(nil, nil, aad)
	if got, err := k.Open(nil, empty, aad); err != nil || len(got) != 0 {
		t.Fatalf("Open(empty) = %q, %v", got, err)
	}

	other, err := KeyringFromBytes([]byte(must(keyLine("k9-other"))))
	if err != nil {
		t.Fatal(err)
	}
	sameID, err := KeyringFromBytes([]byte(must(keyLine("k1-00000001"))))
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, kr *Keyring, s []byte, aad string) {
		t.Helper()
		got, err := kr.Open(nil, s, aad)
		if err == nil {
			t.Errorf("%s: Open succeeded", name)
			return
		}
		if got != nil {
			t.Errorf("%s: Open returned bytes with its error", name)
		}
		if strings.Contains(err.Error(), string(plain)) || strings.Contains(err.Error(), "canary") {
			t.Errorf("%s: error holds plaintext: %v", name, err)
		}
	}
	check("wrong aad", k, sealed, "s/p/fraud/OTHER")
	check("unknown key id", other, sealed, aad)
	check("same id, other key", sameID, sealed, aad)
	check("empty", k, nil, aad)
	check("truncated", k, sealed[:len(sealed)-1], aad)
	check("header only", k, sealed[:1+11+nonceSize], aad)
	for i := range sealed {
		tampered := bytes.Clone(sealed)
		tampered[i] ^= 0x01
		check(fmt.Sprintf("tampered byte %d", i), k, tampered, aad)
	}
}

func must(s, _ string) string { return s }

func TestKeyringRotation(t *testing.T) {
	oldLine, _ := keyLine("k1-old")
	newLine, _ := keyLine("k2-new")
	old, err := KeyringFromBytes([]byte(oldLine))
	if err != nil {
		t.Fatal(err)
	}
	sealedOld := old.Seal(nil, []byte("v1"), "k")
	rotated, err := KeyringFromBytes([]byte("# rotated\n" + newLine + oldLine))
	if err != nil {
		t.Fatal(err)
	}
	if rotated.PrimaryID() != "k2-new" {
		t.Fatalf("primary %q, want the first key", rotated.PrimaryID())
	}
	if got, err := rotated.Open(nil, sealedOld, "k"); err != nil || string(got) != "v1" {
		t.Fatalf("rotated ring cannot open the old key's value: %q, %v", got, err)
	}
	sealedNew := rotated.Seal(nil, []byte("v2"), "k")
	if _, err := old.Open(nil, sealedNew, "k"); err == nil {
		t.Fatal("old ring opened a value sealed with the new key")
	}
}

// TestOpenInPlace checks that Open decrypts into dst's spare capacity
// without allocating, so the agent can decrypt into locked memory.
func TestOpenInPlace(t *testing.T) {
	k, err := KeyringFromBytes([]byte(must(keyLine("k1"))))
	if err != nil {
		t.Fatal(err)
	}
	plain := bytes.Repeat([]byte("s"), 300)
	sealed := k.Seal(nil, plain, "aad")
	dst := make([]byte, 0, len(plain))
	var out []byte
	allocs := testing.AllocsPerRun(100, func() {
		out, err = k.Open(dst, sealed, "aad")
	})
	if err != nil || !bytes.Equal(out, plain) {
		t.Fatalf("Open = %q, %v", out, err)
	}
	if &out[0] != &dst[:1][0] {
		t.Fatal("Open did not decrypt into dst")
	}
	if allocs != 0 {
		t.Fatalf("Open into a large enough dst allocated %v times", allocs)
	}
}

func TestKeyringFileModes(t *testing.T) {
	line, b64 := keyLine("k1-modes")
	for _, tt := range []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true},
		{0o400, true},
		{0o640, false},
		{0o604, false},
		{0o644, false},
		{0o660, false},
		{0o602, false},
		{0o620, false},
		{0o666, false},
	} {
		t.Run(fmt.Sprintf("%04o", tt.mode), func(t *testing.T) {
			path := writeKeyFile(t, line, tt.mode)
			_, err := LoadKeyring(path, false)
			if tt.ok {
				if err != nil {
					t.Fatalf("mode %04o refused: %v", tt.mode, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("mode %04o accepted", tt.mode)
			}
			msg := err.Error()
			if !strings.Contains(msg, path) || !strings.Contains(msg, fmt.Sprintf("%04o", tt.mode)) {
				t.Errorf("error does not name the path and mode: %v", err)
			}
			if strings.Contains(msg, b64) || strings.Contains(msg, b64[:12]) {
				t.Errorf("error holds the key: %v", err)
			}
			// create must not replace a refused file.
			if _, err := LoadKeyring(path, true); err == nil {
				t.Fatal("create accepted a refused existing file")
			}
			if got, _ := os.ReadFile(path); string(got) != line {
				t.Fatal("refused key file was changed")
			}
		})
	}
	t.Run("directory", func(t *testing.T) {
		if _, err := LoadKeyring(t.TempDir(), false); err == nil {
			t.Fatal("a directory was accepted as a key file")
		}
	})
}

func TestKeyringMalformed(t *testing.T) {
	good, goodKey := keyLine("k1-good")
	_, secretish := keyLine("x")
	short := base64.StdEncoding.EncodeToString([]byte("sixteen-byte-key"))
	unpadded := strings.TrimRight(secretish, "=")
	for _, tt := range []struct {
		name, content string
		line          int // 0: no line number expected
	}{
		{"empty", "", 0},
		{"only comments", "# nothing\n\n   \n", 0},
		{"one field", "# c\n" + secretish + "\n", 2},
		{"three fields", good + "k2 " + secretish + " extra\n", 2},
		{"bad base64", "k1 " + strings.Repeat("!", 44) + "\n", 1},
		{"short key", good + "\n\nk2 " + short + "\n", 4},
		{"long key", "k1 " + base64.StdEncoding.EncodeToString(make([]byte, 48)) + "\n", 1},
		{"unpadded", "k1 " + unpadded + "\n", 1},
		{"key then id", secretish + " k1\n", 1},
		{"bad id char", "k/1 " + secretish + "\n", 1},
		{"id too long", strings.Repeat("k", 256) + " " + secretish + "\n", 1},
		{"duplicate id", good + "# again\nk1-good " + secretish + "\n", 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := KeyringFromBytes([]byte(tt.content))
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			if tt.line > 0 && !strings.Contains(msg, fmt.Sprintf("line %d:", tt.line)) {
				t.Errorf("error %q does not name line %d", msg, tt.line)
			}
			for _, secret := range []string{secretish, secretish[:16], unpadded[:16], goodKey[:16], short[:12]} {
				if strings.Contains(msg, secret) {
					t.Errorf("error echoes key material: %q", msg)
				}
			}
			// The same through a file, which also names the path.
			path := writeKeyFile(t, tt.content, 0o600)
			_, err = LoadKeyring(path, false)
			if err == nil || !strings.Contains(err.Error(), path) {
				t.Errorf("LoadKeyring error %v does not name the path", err)
			}
		})
	}
}

func TestKeyringFormatTolerance(t *testing.T) {
	line, _ := keyLine("k1-crlf")
	line2, _ := keyLine("k2")
	content := "\n# header\r\n  " + strings.TrimSuffix(line, "\n") + "  \r\n\t" + strings.TrimSuffix(line2, "\n") // no final newline
	k, err := KeyringFromBytes([]byte(content))
	if err != nil {
		t.Fatalf("tolerable file refused: %v", err)
	}
	if k.PrimaryID() != "k1-crlf" {
		t.Fatalf("primary %q", k.PrimaryID())
	}
}

func decodeKey(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(s) }
