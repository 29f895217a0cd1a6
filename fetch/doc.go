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
// Local, the embedded default, keeps its state in two files in DIR: the
// state file DIR/state.enc, the whole record set as of one revision, and
// the log DIR/state.log, one record per batch committed since. A commit
// appends its record to the log and fdatasyncs it before Commit returns:
// its cost does not grow with the store. When the log holds more than
// max(1 MiB, the state file's size), the commit that took it there also
// compacts: the whole state is written to a temp file DIR/state.enc.tmp-*,
// fsynced and renamed over the state file, the directory fsynced; then a
// new log (a temp file DIR/state.log.tmp-* with the header alone, fsynced)
// is renamed over the old one and the directory fsynced. Compaction costs
// O(state), once per O(state) bytes committed. DIR/state.lock is flocked
// while a process has the store open.
//
// Opening reads the state file and applies every log record above its
// revision, in order. Records at or below it are skipped: a crash between
// the two renames of a compaction leaves the old log beside a state file
// that holds all of it, and no batch is applied twice. A kill at any point
// loses no acknowledged commit. A record at the end of the log that is cut
// short, or damaged with no intact record after it, is a commit whose write
// a crash interrupted (never acknowledged): it is cut off the log and
// reported (Local.Recovery). Damage with an intact record after it, or
// records that do not follow the state file's revision one by one, make
// OpenLocal fail with ErrStoreCorrupt (STORE_CORRUPT), changing nothing.
//
// The state file:
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
// The log:
//
//	"ENVLETLG"   8 bytes, magic
//	u8           format version, 1
//	records, each:
//	  u32        length n of the sealed body
//	  u32        CRC-32C (Castagnoli) of the four length bytes
//	  n bytes    Keyring.Seal(body, aad "envlet-log v1")
//
// and a body, the batch, all integers big endian:
//
//	u64          revision (one above the record before it)
//	u32          count, at least 1
//	count times, keys unique and non-empty:
//	  u8         1 put, 2 delete
//	  u16 len, key bytes
//	  put only: u32 len, value bytes (sealed by the agent: opaque here)
//
// Since the payload and every body are sealed whole, record keys (user,
// project and variable names) are not readable on disk either, and a log
// record reveals no more than the state file. Both files are sealed with
// the primary key of the moment; Compact (which Reseal calls) rewrites
// both under the current one, so an old key can go. The local store has one
// writer, so revisions are consecutive; it keeps the last 4096 batches in
// memory for Watch and asks older watchers to re-read the snapshot
// (Batch.Reset).
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
