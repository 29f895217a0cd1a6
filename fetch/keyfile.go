package fetch

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"syscall"
)

// Key file editing for rotation. Each function rewrites the key file
// atomically (temp file, fsync, rename over, fsync of the directory),
// keeping its comments, mode 0600 and owner, so an agent that reloads the
// file sees either the old ring or the new one.

// AddKey generates a key and adds it to the key file at path: first (the
// new primary) when primary is true, else last (a secondary, which opens
// but does not seal). It returns the new key's id.
func AddKey(path string, primary bool) (string, error) {
	k, lines, err := readKeyLines(path)
	if err != nil {
		return "", err
	}
	var raw [KeySize]byte
	defer clear(raw[:])
	rand.Read(raw[:])
	var id string
	for {
		var r [4]byte
		rand.Read(r[:])
		id = fmt.Sprintf("k%d-%s", len(k.IDs())+1, hex.EncodeToString(r[:]))
		if !k.Has(id) {
			break
		}
	}
	line := base64.StdEncoding.AppendEncode([]byte(id+" "), raw[:])
	defer clear(line)
	if primary {
		lines = insertBeforeFirstKey(lines, line)
	} else {
		lines = append(lines, line)
	}
	if err := rewriteKeyFile(path, lines); err != nil {
		return "", err
	}
	return id, nil
}

// PromoteKey makes the key id the primary of the key file at path: its
// line moves before every other key line.
func PromoteKey(path, id string) error {
	k, lines, err := readKeyLines(path)
	if err != nil {
		return err
	}
	if !k.Has(id) {
		return fmt.Errorf("promote key: no key %q in %s", id, path)
	}
	if k.PrimaryID() == id {
		return nil
	}
	i := keyLineIndex(lines, id)
	line := lines[i]
	lines = append(lines[:i:i], lines[i+1:]...)
	return rewriteKeyFile(path, insertBeforeFirstKey(lines, line))
}

// RemoveKey deletes the key id from the key file at path. It refuses to
// remove the primary: promote another key first.
func RemoveKey(path, id string) error {
	k, lines, err := readKeyLines(path)
	if err != nil {
		return err
	}
	switch {
	case !k.Has(id):
		return fmt.Errorf("remove key: no key %q in %s", id, path)
	case k.PrimaryID() == id:
		return fmt.Errorf("remove key: %q is the primary key of %s; promote another key first", id, path)
	}
	i := keyLineIndex(lines, id)
	return rewriteKeyFile(path, append(lines[:i:i], lines[i+1:]...))
}

// readKeyLines loads the key file (with LoadKeyring's checks) and returns
// its lines.
func readKeyLines(path string) (*Keyring, [][]byte, error) {
	k, err := LoadKeyring(path, false)
	if err != nil {
		return nil, nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read key file: %w", err)
	}
	data = bytes.TrimRight(data, "\n")
	return k, bytes.Split(data, []byte("\n")), nil
}

// keyLineIndex returns the index of the line that holds key id, -1 if none.
func keyLineIndex(lines [][]byte, id string) int {
	for i, l := range lines {
		f := bytes.Fields(l)
		if len(f) == 2 && f[0][0] != '#' && string(f[0]) == id {
			return i
		}
	}
	return -1
}

func insertBeforeFirstKey(lines [][]byte, line []byte) [][]byte {
	at := len(lines)
	for i, l := range lines {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' {
			at = i
			break
		}
	}
	out := make([][]byte, 0, len(lines)+1)
	out = append(out, lines[:at]...)
	out = append(out, line)
	return append(out, lines[at:]...)
}

// rewriteKeyFile replaces the key file with lines, atomically and durably,
// after checking that they parse.
func rewriteKeyFile(path string, lines [][]byte) error {
	data := append(bytes.Join(lines, []byte("\n")), '\n')
	defer clear(data)
	if _, err := parseKeyring(data); err != nil {
		return fmt.Errorf("rewrite key file %s: %w", path, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("rewrite key file: %w", err)
	}
	return replaceFile("rewrite key file", path, data, func(f *os.File) error {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 {
			// Keep the owner: the agent may run as its own user.
			return f.Chown(int(st.Uid), int(st.Gid))
		}
		return nil
	})
}

// errNotSealed is returned by a backend asked to store a value that is not
// in the sealed format of a key in its ring.
var errNotSealed = errors.New("value is not sealed with a key of the key ring")
