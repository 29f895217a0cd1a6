"""The workload protocol (agent/wire in the Go tree): frames over the workload socket.

The package doc of agent/wire is the specification; this is a peer built
from it. A frame is a 12-byte header (``ENVL``, version 1, type, two zero
bytes, payload length u32 big endian) and the payload.
"""

from __future__ import annotations

import struct
from typing import List, Optional, Tuple

MAGIC = b"ENVL"
VERSION = 1
HEADER_SIZE = 12

GET_ENV = 0x01
GET_SECRET = 0x02
WATCH = 0x03
ENV = 0x81
SECRET = 0x82
CHANGED = 0x83
ERROR = 0xFF

MAX_PAYLOAD = 16 << 20
MAX_TOKEN = 1024
MAX_NAME = 256
MAX_VALUE = 1 << 20
MAX_ENTRIES = 65536

# The payload bound of each reply type, checked on the header alone.
_BOUNDS = {ENV: MAX_PAYLOAD, SECRET: MAX_VALUE + 4, CHANGED: 8, ERROR: 2 * (2 + 65535)}
_NAMES = {GET_ENV: "GetEnv", GET_SECRET: "GetSecret", WATCH: "Watch", ENV: "Env", SECRET: "Secret", CHANGED: "Changed", ERROR: "Error"}


class WireError(ValueError):
    """A frame that breaks the protocol; the message names the field, never a value."""


def type_name(t: int) -> str:
    """The protocol's name for frame type t."""
    return _NAMES.get(t, f"type 0x{t:02x}")


def valid_name(name: bytes) -> bool:
    """Whether name may travel as a variable or secret name: 1..256 bytes, no '=' or NUL."""
    return 0 < len(name) <= MAX_NAME and b"=" not in name and b"\x00" not in name


def encode_request(t: int, token: bytes, name: Optional[bytes] = None) -> bytes:
    """A whole request frame: GetEnv or Watch with token, GetSecret with token and name."""
    payload = struct.pack(">H", len(token)) + token
    if t == GET_SECRET:
        assert name is not None
        payload += struct.pack(">H", len(name)) + name
    return MAGIC + bytes([VERSION, t, 0, 0]) + struct.pack(">I", len(payload)) + payload


def parse_header(h: bytes) -> Tuple[int, int]:
    """Checks a reply's 12 header bytes and returns its type and payload length."""
    if h[:4] != MAGIC:
        raise WireError("read frame: bad magic (not an envlet workload socket?)")
    if h[4] != VERSION:
        raise WireError(f"read frame: version {h[4]}, want {VERSION}")
    t = h[5]
    if t not in _BOUNDS:
        raise WireError(f"read frame: {type_name(t)} is not a reply type")
    if h[6:8] != b"\x00\x00":
        raise WireError("read frame: reserved bytes are not zero")
    (n,) = struct.unpack(">I", h[8:12])
    if n > _BOUNDS[t]:
        raise WireError(f"read {type_name(t)}: payload of {n} bytes is larger than {_BOUNDS[t]}")
    return t, n


class _Decoder:
    def __init__(self, op: str, p: bytes) -> None:
        self.op, self.p, self.i = op, p, 0

    def take(self, field: str, n: int) -> bytes:
        if self.i + n > len(self.p):
            raise WireError(f"{self.op}: {field} runs past the end of the payload")
        b = self.p[self.i : self.i + n]
        self.i += n
        return b

    def u8(self, field: str) -> int:
        return self.take(field, 1)[0]

    def u16(self, field: str) -> int:
        return int(struct.unpack(">H", self.take(field, 2))[0])

    def u32(self, field: str) -> int:
        return int(struct.unpack(">I", self.take(field, 4))[0])

    def u64(self, field: str) -> int:
        return int(struct.unpack(">Q", self.take(field, 8))[0])

    def end(self) -> None:
        if self.i != len(self.p):
            raise WireError(f"{self.op}: {len(self.p) - self.i} bytes after the last field")


def decode_env(p: bytes) -> Tuple[int, List[Tuple[bytes, Optional[bytes]]]]:
    """An Env payload: the revision and the entries in order, (name, value) or (name, None) for unset."""
    d = _Decoder("decode Env", p)
    rev = d.u64("revision")
    count = d.u32("count")
    if count > MAX_ENTRIES:
        raise WireError(f"decode Env: {count} entries, more than {MAX_ENTRIES}")
    entries: List[Tuple[bytes, Optional[bytes]]] = []
    for i in range(count):
        flags = d.u8("flags")
        if flags & ~1:
            raise WireError(f"decode Env: entry {i} has unknown flags")
        name = d.take("name", d.u16("name length"))
        if not valid_name(name):
            raise WireError(f"decode Env: entry {i} has an invalid name")
        n = d.u32("value length")
        if n > MAX_VALUE:
            raise WireError(f"decode Env: entry {i} value longer than {MAX_VALUE} bytes")
        value = d.take("value", n)
        if b"\x00" in value:
            raise WireError(f"decode Env: entry {i} value holds a NUL byte")
        if flags & 1:
            if value:
                raise WireError(f"decode Env: unset entry {i} has a value")
            entries.append((name, None))
        else:
            entries.append((name, value))
    d.end()
    return rev, entries


def decode_secret(p: bytes) -> bytes:
    """A Secret payload: the value, any bytes."""
    d = _Decoder("decode Secret", p)
    n = d.u32("value length")
    if n > MAX_VALUE:
        raise WireError(f"decode Secret: value longer than {MAX_VALUE} bytes")
    v = d.take("value", n)
    d.end()
    return v


def decode_error(p: bytes) -> Tuple[str, str]:
    """An Error payload: the code and the message."""
    d = _Decoder("decode Error", p)
    code = d.take("code", d.u16("code length"))
    msg = d.take("message", d.u16("message length"))
    d.end()
    if not code:
        raise WireError("decode Error: empty code")
    return code.decode("utf-8", "replace"), msg.decode("utf-8", "replace")
