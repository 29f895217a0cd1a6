package fetch

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// KeySize is the size of a key ring key: AES-256.
	KeySize = 32
	// MaxKeyIDLen is the longest key id: its length is one byte of the
	// sealed format.
	MaxKeyIDLen = 255

	nonceSize = 12
	tagSize   = 16
	// maxKeyFile bounds what LoadKeyring reads: a key line is under 300
	// bytes, so this is thousands of keys.
	maxKeyFile = 1 << 20
)

// Keyring seals and opens values with AES-256-GCM. The first key is the
// primary: Seal uses it. Every key opens, so a key can be rotated by putting
// a new one first and keeping the old one until everything is resealed.
// A Keyring is safe for concurrent use, and Replace swaps its keys while
// others seal and open with it.
type Keyring struct {
	r atomic.Pointer[ring]
}

// ring is one immutable set of keys.
type ring struct {
	ids   []string
	aeads []cipher.AEAD
	byID  map[string]cipher.AEAD
}

var (
	errSealedShort = errors.New("open sealed value: too short to be sealed")
	// ErrUnknownKey reports a value sealed with a key that is not in the
	// key ring: the ring file was not distributed to this node yet. Open's
	// error wraps it and names the key id (ids are not secret).
	ErrUnknownKey = errors.New("sealed with a key that is not in the key ring")
	errAuth       = errors.New("open sealed value: authentication failed (wrong key, wrong record or tampered)")
)

// LoadKeyring reads a key file: text, one key per line as `ID BASE64-KEY`
// (the key 32 bytes in standard, padded base64, as `openssl rand -base64
// 32` prints it); `#` comments and blank lines are ignored; the first key
// is the primary. The outcomes:
//
//   - the file exists: it must be a regular file without any access for
//     group or others (like an ssh private key), else an error naming the
//     path and its mode; a malformed line is an error naming its line
//     number; no error ever quotes the file's contents.
//   - the file does not exist and create is false: an error that
//     errors.Is(err, fs.ErrNotExist).
//   - the file does not exist and create is true: a new key is generated
//     and written with mode 0600, atomically and durably (temp file, fsync,
//     rename that never replaces, fsync of the directory). If another
//     process created the file meanwhile, that file is loaded instead, so
//     two agents starting together agree on one key. The directory must
//     exist.
func LoadKeyring(path string, create bool) (*Keyring, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		return createKeyring(path)
	}
	if err != nil {
		return nil, fmt.Errorf("open key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("load key file %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("load key file %s: mode %04o gives access to group or others; it must be 0600 or stricter", path, perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	defer clear(data)
	if err != nil {
		return nil, fmt.Errorf("read key file %s: %w", path, err)
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("load key file %s: larger than %d bytes", path, maxKeyFile)
	}
	k, err := parseKeyring(data)
	if err != nil {
		return nil, fmt.Errorf("load key file %s: %w", path, err)
	}
	return k, nil
}

// KeyringFromBytes parses a key ring in the key file format, as handed over
// by systemd in $CREDENTIALS_DIRECTORY. It does not keep b; the caller
// should clear it.
func KeyringFromBytes(b []byte) (*Keyring, error) {
	k, err := parseKeyring(b)
	if err != nil {
		return nil, fmt.Errorf("parse key ring: %w", err)
	}
	return k, nil
}

// PrimaryID returns the id of the key that Seal uses.
func (k *Keyring) PrimaryID() string { return k.r.Load().ids[0] }

// IDs returns the ids of every key, the primary first.
func (k *Keyring) IDs() []string { return slices.Clone(k.r.Load().ids) }

// Has reports whether the ring holds a key with this id.
func (k *Keyring) Has(id string) bool { return k.r.Load().byID[id] != nil }

// Replace makes k use the keys of other from now on (a reloaded key file).
// Values sealed and opened before keep their outcome; other is not changed.
func (k *Keyring) Replace(other *Keyring) { k.r.Store(other.r.Load()) }

// SealedKeyID returns the id of the key that sealed a value made by Seal,
// without authenticating anything; ok is false if sealed is too short to be
// one.
func SealedKeyID(sealed []byte) (id string, ok bool) {
	if len(sealed) < 1 || len(sealed) < 1+int(sealed[0])+nonceSize+tagSize {
		return "", false
	}
	return string(sealed[1 : 1+int(sealed[0])]), true
}

// Seal encrypts plaintext with the primary key, binding it to aad, and
// appends the result to dst: u8 len(keyid) | keyid | 12-byte random nonce |
// ciphertext and 16-byte tag. plaintext must not overlap dst's spare
// capacity.
func (k *Keyring) Seal(dst, plaintext []byte, aad string) []byte {
	r := k.r.Load()
	id := r.ids[0]
	dst = slices.Grow(dst, 1+len(id)+nonceSize+len(plaintext)+tagSize)
	dst = append(dst, byte(len(id)))
	dst = append(dst, id...)
	n := len(dst)
	dst = dst[:n+nonceSize]
	nonce := dst[n:]
	rand.Read(nonce) // never fails: it crashes the program rather than return an error
	return r.aeads[0].Seal(dst, nonce, plaintext, aadBytes(aad))
}

// Open decrypts a value made by Seal with the same aad and appends the
// plaintext to dst. When dst has room for the plaintext (see PlaintextLen)
// it is decrypted in place, without allocating, so the caller can decrypt
// straight into locked memory. Open fails, with an error that holds neither
// plaintext nor key material, when sealed is malformed, names a key that is
// not in the ring, was sealed with another aad, or was tampered with.
func (k *Keyring) Open(dst, sealed []byte, aad string) ([]byte, error) {
	if len(sealed) < 1 {
		return nil, errSealedShort
	}
	idLen := int(sealed[0])
	if len(sealed) < 1+idLen+nonceSize+tagSize {
		return nil, errSealedShort
	}
	aead := k.r.Load().byID[string(sealed[1:1+idLen])]
	if aead == nil {
		return nil, fmt.Errorf("open sealed value: %w: %q", ErrUnknownKey, sealed[1:1+idLen])
	}
	nonce := sealed[1+idLen : 1+idLen+nonceSize]
	out, err := aead.Open(dst, nonce, sealed[1+idLen+nonceSize:], aadBytes(aad))
	if err != nil {
		return nil, errAuth
	}
	return out, nil
}

// PlaintextLen returns the length of the plaintext sealed in sealed, so the
// caller can size a buffer for Open. It does not authenticate anything.
func PlaintextLen(sealed []byte) (int, error) {
	if len(sealed) < 1 {
		return 0, errSealedShort
	}
	n := len(sealed) - 1 - int(sealed[0]) - nonceSize - tagSize
	if n < 0 {
		return 0, errSealedShort
	}
	return n, nil
}

// aadBytes returns the bytes of s without copying: GCM only reads its
// additional data, and a copy would cost an allocation on every Open.
func aadBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// parseKeyring parses the key file format. Its errors name a line number,
// never the line.
func parseKeyring(data []byte) (*Keyring, error) {
	k := &ring{byID: map[string]cipher.AEAD{}}
	firstLine := map[string]int{}
	for lineNo := 1; len(data) > 0; lineNo++ {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte("\n"))
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		fields := bytes.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("line %d: want two fields, a key id and a base64 key", lineNo)
		}
		id := string(fields[0])
		if !validKeyID(id) {
			return nil, fmt.Errorf("line %d: key id must be 1 to %d of the characters A-Z a-z 0-9 . _ : -", lineNo, MaxKeyIDLen)
		}
		if prev, dup := firstLine[id]; dup {
			return nil, fmt.Errorf("line %d: key id already used on line %d", lineNo, prev)
		}
		aead, err := newAEAD(fields[1])
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", lineNo, err)
		}
		firstLine[id] = lineNo
		k.ids = append(k.ids, id)
		k.aeads = append(k.aeads, aead)
		k.byID[id] = aead
	}
	if len(k.ids) == 0 {
		return nil, errors.New("no keys")
	}
	kr := &Keyring{}
	kr.r.Store(k)
	return kr, nil
}

// newAEAD decodes a base64 key and makes its AES-256-GCM; the decoded key is
// cleared. The error does not quote the key.
func newAEAD(b64 []byte) (cipher.AEAD, error) {
	var raw [KeySize + 1]byte // DecodedLen of a padded 32-byte key is 33
	defer clear(raw[:])
	if len(b64) != base64.StdEncoding.EncodedLen(KeySize) {
		return nil, fmt.Errorf("key is not %d bytes in padded base64", KeySize)
	}
	n, err := base64.StdEncoding.Strict().Decode(raw[:], b64)
	if err != nil || n != KeySize {
		return nil, fmt.Errorf("key is not %d bytes in padded base64", KeySize)
	}
	block, err := aes.NewCipher(raw[:KeySize])
	if err != nil {
		return nil, fmt.Errorf("make cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("make cipher: %w", err)
	}
	return aead, nil
}

func validKeyID(id string) bool {
	if len(id) == 0 || len(id) > MaxKeyIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// createKeyring generates a key file at path, or loads the one another
// process created first.
func createKeyring(path string) (*Keyring, error) {
	var raw [KeySize]byte
	defer clear(raw[:])
	rand.Read(raw[:])
	var idRand [4]byte
	rand.Read(idRand[:])
	id := "k1-" + hex.EncodeToString(idRand[:])

	content := make([]byte, 0, 256)
	content = append(content, "# envlet key ring: one key per line, `ID BASE64-KEY`.\n"...)
	content = append(content, "# The first key seals new values; every key opens. Keep this file 0600.\n"...)
	content = append(content, id...)
	content = append(content, ' ')
	content = base64.StdEncoding.AppendEncode(content, raw[:])
	content = append(content, '\n')
	defer clear(content)

	created, err := writeNew(path, content)
	if err != nil {
		return nil, fmt.Errorf("create key file %s: %w", path, err)
	}
	if !created {
		return LoadKeyring(path, false)
	}
	k, err := parseKeyring(content)
	if err != nil {
		return nil, fmt.Errorf("create key file %s: %w", path, err)
	}
	return k, nil
}

// writeNew writes data to a new file at path with mode 0600, atomically and
// durably, and never replaces an existing file: it reports created false if
// path exists.
func writeNew(path string, data []byte) (created bool, err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*") // mode 0600
	if err != nil {
		return false, err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	if _, err := f.Write(data); err != nil {
		f.Close()
		return false, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return false, err
	}
	if err := f.Close(); err != nil {
		return false, err
	}
	err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, path, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// A file system without RENAME_NOREPLACE: a hard link fails on an
		// existing name just the same, and the temp name goes below.
		err = os.Link(tmp, path)
	}
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	os.Remove(tmp)
	if err := syncDir(dir); err != nil {
		return false, err
	}
	return true, nil
}

// syncDir fsyncs a directory, making renames and creations in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
