// Package wire is the workload protocol: the frames that envlet-exec and the
// agent exchange over the workload socket (/run/envlet/workload.sock). This
// comment is the specification; the code follows it, and a peer written in
// any language can be built from it alone.
//
// The package owns the byte format and its limits. It does no I/O beyond
// reading one frame from an io.Reader, keeps no state, and imports only small
// parts of the standard library (not fmt, not reflect, not encoding/binary),
// because envlet-exec links it and must stay tiny.
//
// # Frames
//
// Every message, in both directions, is one frame:
//
//	offset size field
//	0      4    magic, the ASCII bytes "ENVL"
//	4      1    version, 1
//	5      1    type (below)
//	6      2    reserved, zero
//	8      4    payload length n, unsigned big endian
//	12     n    payload
//
// A reader rejects a frame whose magic is wrong (ErrBadMagic), whose version
// is not 1 (ErrVersion), whose type is not in the table below (ErrType), whose
// reserved bytes are not zero (ErrReserved), or whose n is larger than the
// bound of its type (ErrTooLarge). All of this is checked from the 12 header
// bytes, before any payload is read or any memory set aside for it, and no
// allocation for a payload is larger than its n.
//
// # Payload fields
//
// All integers are unsigned and big endian.
//
//	u8, u16, u32, u64   1, 2, 4, 8 bytes
//	bytes16, str16      u16 length L, then L bytes
//	bytes32             u32 length L, then L bytes
//
// str16 and bytes16 are the same bytes; str16 marks a field that holds text
// (a name, a code, a message), bytes16 one that holds opaque bytes (a token).
// A payload must be consumed exactly: a field that runs past its end is an
// error (ErrTruncated), and so is a byte left over after the last field
// (ErrTrailing).
//
// # Types
//
//	type  name       direction          payload                              payload bound
//	0x01  GetEnv     launcher -> agent  bytes16 token                        1026
//	0x02  GetSecret  launcher -> agent  bytes16 token, str16 name            1284
//	0x03  Watch      launcher -> agent  bytes16 token                        1026
//	0x81  Env        agent -> launcher  u64 revision, u32 count, entries     16 MiB (MaxPayload)
//	0x82  Secret     agent -> launcher  bytes32 value                        1 MiB + 4
//	0x83  Changed    agent -> launcher  u64 revision                         exactly 8
//	0xFF  Error      agent -> launcher  str16 code, str16 message            131074
//
// The payload bound of each type follows from the field limits below; a
// reader enforces it on the header alone, so an agent reading a request never
// sets aside more than 1284 bytes however large the length a peer declares.
//
// A token is empty when the launcher has none, and at most 1024 bytes
// (MaxToken). Watch asks for an Env frame now and a Changed frame for every
// later revision, until either side closes the connection.
//
// An Env payload holds count entries (at most 65536, MaxEntries), each:
//
//	u8      flags   bit 0: unset; bits 1-7 zero
//	str16   name
//	bytes32 value   empty when unset
//
// The launcher applies the entries in order to its own environment, less every
// ENVLET_* name: a set entry sets the name to the value, an unset entry
// removes the name. The agent has merged every layer already; the launcher
// only applies the list.
//
// # Field rules
//
// Beyond the framing, a decoder rejects with ErrTooLarge or ErrInvalid:
//
//   - a name (an Env entry's, or GetSecret's) that is empty, longer than 256
//     bytes (MaxName), or holds '=' or a NUL byte: names become the left
//     side of NAME=value strings handed to execve;
//   - an Env value longer than 1 MiB (MaxValue) or holding a NUL byte
//     (execve takes C strings), or non-empty on an unset entry;
//   - an Env entry with a flag bit other than bit 0 set (room for later
//     versions, which will bump the version byte);
//   - a Secret value longer than 1 MiB (MaxValue); a secret may hold any
//     bytes, NUL included;
//   - an Error frame with an empty code. Codes are the stable error codes of
//     the product (WORKLOAD_UNKNOWN, PERMISSION_DENIED, …); the message is
//     for people and never holds a value.
//
// These rules make the encoding canonical: a frame that decodes is exactly
// the frame its decoded form encodes to.
//
// # Errors
//
// Every error a decoder returns wraps one of ErrBadMagic, ErrVersion,
// ErrType, ErrReserved, ErrTooLarge, ErrTruncated, ErrTrailing or ErrInvalid
// (test with errors.Is) and says which frame and field failed, never a value.
// ReadFrame returns io.EOF alone when the stream ends cleanly before a frame,
// and an error wrapping io.ErrUnexpectedEOF when it ends inside one.
//
// # Encoding
//
// The Append functions write whole frames and do not enforce the limits
// above; the decoder does. A caller that builds an Env frame from stored
// values checks EnvSize against HeaderSize+MaxPayload first. A field longer
// than its length prefix can express is a bug in the caller, and the Append
// functions panic on it rather than write a frame no peer can parse; the one
// exception is AppendError, which cuts a code or message to 65535 bytes
// because it is the path that reports failures.
package wire
