// Package fetch owns the sources of records: the backends that store them
// behind one small interface, Backend, and the Keyring that seals values
// before they reach any backend.
//
// A backend stores opaque bytes under string keys, in transactions with
// preconditions (Txn, Cond), and reports every committed change in order
// (Watch). The agent seals every value with Keyring.Seal, using the record's
// key as additional data, so a backend never sees a value in clear and a
// sealed value moved to another key does not open.
//
// What this package must not do: see values in clear (the agent decrypts,
// into locked memory from package cache); log; put a value or key material
// in an error. Record keys are names and may appear in errors.
//
// # Key ring
//
// AES-256-GCM. A key file is text, one key per line:
//
//	# comments and blank lines are ignored
//	k1-3f9a0c21 q9Zx...base64 of 32 bytes...=
//
// The first key is the primary and seals; every key opens. A sealed value is
//
//	u8 len(keyid) | keyid | 12-byte random nonce | ciphertext | 16-byte tag
//
// with the caller's aad string as GCM additional data.
//
// # Local store
//
// Local, the embedded default, keeps its whole state in one file,
// DIR/state.enc, rewritten on every commit that changes something: a temp
// file DIR/state.enc.tmp-* is written, fsynced and renamed over the old one,
// and the directory is fsynced, before Commit returns. A kill at any point
// leaves either the old or the new state, and every acknowledged write.
// DIR/state.lock is flocked while a process has the store open. The file:
//
//	"ENVLETST"   8 bytes, magic
//	u8           format version, 1
//	sealed       Keyring.Seal(payload, aad "envlet-state v1")
//
// and the payload, all integers big endian:
//
//	u64          revision
//	u32          count
//	count times, sorted by key, keys unique and non-empty:
//	  u16 len, key bytes
//	  u64        modrev, 1 to revision
//	  u32 len, value bytes (sealed by the agent: opaque here)
//
// Since the whole payload is sealed, record keys (user, project and variable
// names) are not readable on disk either. The local store has one writer,
// so revisions are consecutive; it keeps the last 4096 batches in memory for
// Watch and asks older watchers to re-read the snapshot (Batch.Reset).
//
// # etcd
//
// Etcd (etcd.go) stores record KEY under `<prefix>KEY` with the agent's
// sealed bytes as value, and refuses, before sending, a value that is not
// sealed with a key of its ring. Commit is one etcd transaction; Watch
// follows the prefix through reconnects, leader changes (a watch cancelled
// for want of a leader is started again from the last revision) and
// compaction (a Reset). A probe every second (a linearizable read, which
// needs a quorum) says whether etcd is reachable (Health).
//
// Mirror (snapshot.go) wraps a remote backend with the last read, in memory
// and sealed in a snapshot file, so an agent restarted while etcd is away
// serves what it last knew and says how old it is. Reseal (reseal.go) and
// AddKey, PromoteKey, RemoveKey (keyfile.go) rotate keys.
package fetch
