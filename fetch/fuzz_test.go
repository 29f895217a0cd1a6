package fetch

import (
	"bytes"
	"regexp"
	"testing"
)

// keyringErr is every message KeyringFromBytes may return: fixed words and
// numbers, never any of the input.
var keyringErr = regexp.MustCompile(`^parse key ring: (no keys|line [0-9]+: (` +
	`want two fields, a key id and a base64 key|` +
	`key id must be 1 to 255 of the characters A-Z a-z 0-9 \. _ : -|` +
	`key id already used on line [0-9]+|` +
	`key is not 32 bytes in padded base64))$`)

// FuzzKeyringFile checks that the key file parser never panics, that its
// errors never quote the input, and that whatever it accepts seals and opens.
func FuzzKeyringFile(f *testing.F) {
	f.Add([]byte("k1-0a1b2c3d AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := KeyringFromBytes(data)
		if err != nil {
			if !keyringErr.MatchString(err.Error()) {
				t.Fatalf("unexpected error text %q", err)
			}
			return
		}
		if !validKeyID(k.PrimaryID()) || !bytes.Contains(data, []byte(k.PrimaryID())) {
			t.Fatalf("primary id %q not from the input", k.PrimaryID())
		}
		sealed := k.Seal(nil, data, "aad")
		got, err := k.Open(nil, sealed, "aad")
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// fuzzKeys is a fixed key ring, so FuzzStateFile can make valid files.
var fuzzKeys = func() *Keyring {
	k, err := KeyringFromBytes([]byte("k1-fuzz AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"))
	if err != nil {
		panic(err)
	}
	return k
}()

// FuzzStateFile feeds the state decoder twice: data as a whole state file
// (header, sealed payload), and data as the payload of a correctly sealed
// file. It must never panic, and what it accepts must encode back to the
// same bytes: the format has one encoding per state.
func FuzzStateFile(f *testing.F) {
	f.Add(encodePayload(&state{}))
	f.Add(encodePayload(newState(3, []KV{{Key: "a", Value: []byte("x"), ModRev: 1}, {Key: "b", ModRev: 3}})))
	f.Fuzz(func(t *testing.T, data []byte) {
		if st, err := decodeStateFile(fuzzKeys, data); err == nil {
			check(t, st)
		}
		file := append([]byte(stateMagic+"\x01"), fuzzKeys.Seal(nil, data, stateAAD)...)
		st, err := decodeStateFile(fuzzKeys, file)
		if err != nil {
			return
		}
		if got := encodePayload(st); !bytes.Equal(got, data) {
			t.Fatalf("decode then encode differs:\n%x\n%x", data, got)
		}
		check(t, st)
	})
}

func check(t *testing.T, st *state) {
	t.Helper()
	kvs := st.all()
	for i, kv := range kvs {
		if kv.Key == "" || kv.ModRev < 1 || kv.ModRev > st.rev || (i > 0 && kvs[i-1].Key >= kv.Key) {
			t.Fatalf("decoded an invalid state: record %d", i)
		}
	}
}
