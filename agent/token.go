package agent

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/envlet/envlet/cache"
)

// Workload tokens (docs/design.md §3): `"match": {"token": true}` makes the agent
// issue a random bearer token, written to TOKEN_DIR/ID (mode 0400, owned by
// the workload's uid: match.uid, else root). The launcher sends the file's
// content; the agent compares it in constant time. The token lives in
// locked memory; removing the registration revokes it and removes the file.
//
// An API registration keeps its token in its sealed record, so it survives
// a restart; a file registration keeps a valid token file it finds (same
// owner, mode 0400, 64 hex digits), else it gets a new token.

const (
	tokenBytes = 32
	tokenHex   = 2 * tokenBytes
)

// newToken returns a fresh token, hex-encoded, in locked memory.
func (a *Agent) newToken() (*cache.Buf, error) {
	raw := a.pool.Alloc(tokenBytes)
	defer raw.Free()
	if _, err := rand.Read(raw.Bytes()); err != nil {
		return nil, fmt.Errorf("generate token: %w", err)
	}
	t := a.pool.Alloc(tokenHex)
	hex.Encode(t.Bytes(), raw.Bytes())
	return t, nil
}

// validToken: 64 lowercase hex digits.
func validToken(b []byte) bool { return len(b) == tokenHex && isLowerHex(string(b)) }

// tokenPath is where a workload's token file lives. The id is a valid
// identifier (no '/', not starting with '.'), so the path stays inside
// token_dir and never collides with the agent's temporary files.
func (a *Agent) tokenPath(id string) string { return filepath.Join(a.cfg.TokenDir, id) }

// tokenOwner is the uid and gid a workload's token file belongs to.
func tokenOwner(m *Match) (int, int) {
	uid, gid := 0, 0
	if m.UID != nil {
		uid = int(*m.UID)
	}
	if m.GID != nil {
		gid = int(*m.GID)
	}
	return uid, gid
}

// setupToken gives w its token and token file. For an API registration
// the token comes from its record (issued); for a file registration it is
// the one in a valid existing token file, else a new one. Called with a.mu
// held, from putWorkload.
func (a *Agent) setupToken(w *workload, issued string) error {
	if !w.reg.Match.Token {
		return nil
	}
	uid, gid := tokenOwner(&w.reg.Match)
	path := a.tokenPath(w.reg.ID)
	if err := a.ensureTokenDir(); err != nil {
		return err
	}
	if w.source == sourceAPI {
		if !validToken([]byte(issued)) {
			return errorf(CodeInvalidRequest, "registration %s asks for a token but its record holds none", w.reg.ID)
		}
		w.token = a.pool.Copy([]byte(issued))
	} else if t := readTokenFile(a.pool, path, uid); t != nil {
		w.token, w.tokenFile = t, path
		return nil
	} else if w.token, _ = a.newToken(); w.token == nil {
		return errorf(CodeInternal, "could not generate a token for workload %s", w.reg.ID)
	}
	if err := writeTokenFile(path, w.token.Bytes(), uid, gid); err != nil {
		w.token.Free()
		w.token = nil
		return fmt.Errorf("write token file for workload %s: %w", w.reg.ID, err)
	}
	w.tokenFile = path
	return nil
}

// revokeToken forgets w's token and removes its file. Called with a.mu held.
func (a *Agent) revokeToken(w *workload) {
	if w.tokenFile != "" {
		if err := os.Remove(w.tokenFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			a.log.Warn("remove token file", "workload", w.reg.ID, "error", err)
		}
		w.tokenFile = ""
	}
	w.token.Free()
	w.token = nil
}

// ensureTokenDir creates token_dir: 0711, so a workload can open its own
// file by name but nobody can list the directory.
func (a *Agent) ensureTokenDir() error {
	if err := os.MkdirAll(a.cfg.TokenDir, 0o711); err != nil {
		return fmt.Errorf("create token dir: %w", err)
	}
	if err := os.Chmod(a.cfg.TokenDir, 0o711); err != nil {
		return fmt.Errorf("chmod token dir: %w", err)
	}
	return nil
}

// writeTokenFile writes the token file atomically: a temporary file made
// with O_EXCL and mode 0400, chowned, synced, renamed into place.
func writeTokenFile(path string, token []byte, uid, gid int) error {
	dir := filepath.Dir(path)
	var suffix [8]byte
	rand.Read(suffix[:])
	tmp := filepath.Join(dir, "."+filepath.Base(path)+".tmp-"+hex.EncodeToString(suffix[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o400)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	buf := make([]byte, 0, len(token)+1)
	buf = append(append(buf, token...), '\n')
	_, err = f.Write(buf)
	clear(buf)
	if err == nil && os.Geteuid() == 0 {
		err = f.Chown(uid, gid)
	}
	if err == nil {
		err = f.Chmod(0o400)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// readTokenFile returns the token in path if the file is one the agent
// would have written for this owner: a regular file (not a link), owned by
// uid (by the agent's own user when it cannot chown), mode 0400, holding
// 64 hex digits and a newline. Anything else returns nil.
func readTokenFile(pool *cache.Pool, path string, uid int) *cache.Buf {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil
	}
	owner := uid
	if os.Geteuid() != 0 {
		owner = os.Geteuid()
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || int(st.Uid) != owner || st.Mode&0o7777 != 0o400 || st.Size != tokenHex+1 {
		return nil
	}
	buf := pool.Alloc(tokenHex + 1)
	defer buf.Free()
	if _, err := io.ReadFull(f, buf.Bytes()); err != nil {
		return nil
	}
	return parseTokenFile(pool, buf.Bytes())
}

// parseTokenFile checks the content of a token file: 64 lowercase hex
// digits and a newline.
func parseTokenFile(pool *cache.Pool, b []byte) *cache.Buf {
	if len(b) != tokenHex+1 || b[tokenHex] != '\n' || !validToken(b[:tokenHex]) {
		return nil
	}
	return pool.Copy(b[:tokenHex])
}

// sweepTokens removes token files that belong to no registration (left by
// a registration removed while the agent was down) and stale temporary
// files. Called with a.mu held.
func (a *Agent) sweepTokens() {
	ents, err := os.ReadDir(a.cfg.TokenDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		name := e.Name()
		if w := a.workloads[name]; w != nil && w.tokenFile != "" {
			continue
		}
		// Only what the agent writes: a token file (an id, 0400, 65 bytes)
		// or a temporary one (.ID.tmp-HEX). Anything else stays.
		fi, err := os.Lstat(filepath.Join(a.cfg.TokenDir, name))
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		tmp := strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-")
		if !tmp && (!validIdent(name) || fi.Mode().Perm() != 0o400 || fi.Size() != tokenHex+1) {
			continue
		}
		if err := os.Remove(filepath.Join(a.cfg.TokenDir, name)); err == nil {
			a.log.Info("removed a token file no registration holds", "file", name)
		}
	}
}
