"""Inside a workload: its secrets and its environment, from the agent's workload socket.

This speaks the workload protocol that ``envlet-exec`` speaks, with the
same identity rules: the agent recognises the calling process by its
kernel credentials and cgroup, and by a token when the registration asks
for one. As the launcher does, it finds

- the socket in ``socket=``, else ``$ENVLET_SOCKET``, else
  ``/run/envlet/workload.sock``;
- the token in the file ``token_file=``, else ``$ENVLET_TOKEN_FILE`` (no
  token when neither is set; trailing whitespace is trimmed);
- the time to wait for the agent in ``$ENVLET_TIMEOUT`` (seconds, default
  10, 0 waits forever), and how long to keep retrying an agent that is
  busy or not listening yet in ``$ENVLET_RETRY`` (seconds, default 2).

Errors are ``envlet.RestAPIError`` with the agent's code
(``WORKLOAD_UNKNOWN``, ``PERMISSION_DENIED``, ``ENV_VAR_NOT_FOUND``, …),
or ``AGENT_UNREACHABLE`` (an ``AgentUnavailableError`` naming the socket),
``BAD_REPLY``, ``TOKEN_FILE`` or ``INVALID_REQUEST``.
"""

from __future__ import annotations

import os
import random
import socket as _socket
import time
from typing import Dict, List, Mapping, Optional, Tuple, Union

from . import _wire
from ._errors import (
    AGENT_UNREACHABLE,
    BAD_REPLY,
    INVALID_REQUEST,
    TOKEN_FILE,
    AgentUnavailableError,
    RestAPIError,
)

__all__ = ["DEFAULT_SOCKET", "get_secret", "get_secret_bytes", "get_env", "load_env"]

#: Where the agent serves workloads unless ``$ENVLET_SOCKET`` says otherwise.
DEFAULT_SOCKET = "/run/envlet/workload.sock"

_DEFAULT_TIMEOUT = 10.0
_DEFAULT_RETRY = 2.0
_MAX_TOKEN_FILE = 64 << 10
_RETRY_MIN, _RETRY_MAX = 0.005, 0.2
_TRANSIENT_CODES = ("TOO_MANY_CONNECTIONS", "BUSY")

PathArg = Union[str, "os.PathLike[str]"]


def _printable(s: str, limit: int) -> str:
    # An agent's text must not write control sequences to a terminal.
    return "".join("?" if ord(c) < 0x20 or ord(c) == 0x7F else c for c in s[:limit])


def _seconds(var: str, default: float) -> float:
    raw = os.environ.get(var, "")
    if raw == "":
        return default
    try:
        v = float(raw)
    except ValueError:
        v = -1.0
    if not (0 <= v <= 365 * 24 * 3600) or raw.strip() != raw or raw.lower() in ("nan", "inf"):
        raise RestAPIError(INVALID_REQUEST, f"{var} must be a number of seconds")
    return v


def _read_token(token_file: Optional[PathArg]) -> bytes:
    path = os.fspath(token_file) if token_file is not None else os.environ.get("ENVLET_TOKEN_FILE", "")
    if not path:
        return b""
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_TOKEN_FILE + 1)
    except OSError as err:
        raise RestAPIError(TOKEN_FILE, f"read token file {path}: {err.strerror or err}") from None
    token = raw.rstrip(b" \t\r\n")
    if len(raw) > _MAX_TOKEN_FILE or len(token) > _wire.MAX_TOKEN:
        raise RestAPIError(TOKEN_FILE, f"read token file {path}: token longer than {_wire.MAX_TOKEN} bytes")
    return token


class _Client:
    def __init__(self, socket: Optional[PathArg], token_file: Optional[PathArg]) -> None:
        self.socket = os.fspath(socket) if socket else (os.environ.get("ENVLET_SOCKET") or DEFAULT_SOCKET)
        timeout = _seconds("ENVLET_TIMEOUT", _DEFAULT_TIMEOUT)
        self.timeout: Optional[float] = timeout if timeout > 0 else None
        self.retry = _seconds("ENVLET_RETRY", _DEFAULT_RETRY)
        self.token = _read_token(token_file)

    def ask(self, frame: bytes) -> Tuple[int, bytes]:
        """Sends frame and returns the reply's type and payload, retrying a busy agent."""
        start = time.monotonic()
        delay = _RETRY_MIN
        while True:
            try:
                return self._ask_once(frame)
            except _Transient as t:
                left = self.retry - (time.monotonic() - start)
                if left <= 0:
                    raise t.err from None
                time.sleep(min(delay / 2 + random.random() * delay / 2, left))
                delay = min(2 * delay, _RETRY_MAX)

    def _unreachable(self, action: str, err: BaseException) -> AgentUnavailableError:
        if isinstance(err, _socket.timeout) or (isinstance(err, OSError) and err.errno is None and "timed out" in str(err)):
            reason = f"timed out after {self.timeout:g}s (ENVLET_TIMEOUT)"
        elif isinstance(err, OSError) and err.strerror:
            reason = err.strerror
        else:
            reason = str(err)
        return AgentUnavailableError(AGENT_UNREACHABLE, self.socket, f"{action} {self.socket}: {reason}")

    def _ask_once(self, frame: bytes) -> Tuple[int, bytes]:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.socket)
            except (ConnectionRefusedError, BlockingIOError) as err:
                raise _Transient(self._unreachable("connect", err)) from None
            except OSError as err:
                raise self._unreachable("connect", err) from None
            send_err: Optional[OSError] = None
            try:
                sock.sendall(frame)
            except (BrokenPipeError, ConnectionResetError) as err:
                # Read anyway: an agent that refuses a peer before reading
                # its request may have left an Error frame that says why.
                send_err = err
            except OSError as err:
                raise self._unreachable("send request to", err) from None
            try:
                header = _read_exact(sock, _wire.HEADER_SIZE)
                if header is None:
                    if send_err is not None:
                        raise self._unreachable("send request to", send_err)
                    raise RestAPIError(BAD_REPLY, "agent closed the connection without a reply")
                t, n = _wire.parse_header(header)
                payload = _read_exact(sock, n) if n else b""
                if payload is None:
                    raise RestAPIError(BAD_REPLY, f"read {_wire.type_name(t)}: connection closed inside the frame")
            except _wire.WireError as err:
                raise RestAPIError(BAD_REPLY, str(err)) from None
            except OSError as err:
                if send_err is not None:
                    raise self._unreachable("send request to", send_err) from None
                raise self._unreachable("receive reply from", err) from None
        finally:
            sock.close()
        if t == _wire.ERROR:
            try:
                code, msg = _wire.decode_error(payload)
            except _wire.WireError as err:
                raise RestAPIError(BAD_REPLY, str(err)) from None
            refusal = RestAPIError(_printable(code, 64), "agent refused: " + _printable(msg, 1024))
            if refusal.code in _TRANSIENT_CODES:
                raise _Transient(refusal)
            raise refusal
        return t, payload


class _Transient(Exception):
    def __init__(self, err: RestAPIError) -> None:
        super().__init__(err.code)
        self.err = err


def _read_exact(sock: _socket.socket, n: int) -> Optional[bytes]:
    """n bytes from sock; None if it ends before the first, error if inside."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            if not buf:
                return None
            raise RestAPIError(BAD_REPLY, "connection closed inside a frame")
        buf += chunk
    return bytes(buf)


def get_secret_bytes(name: str, *, socket: Optional[PathArg] = None, token_file: Optional[PathArg] = None) -> bytes:
    """Returns the secret ``name`` this workload may read, byte for byte (a file secret's bytes).

    The agent looks the name up among the workload user's private secrets
    and its project's shared ones. Raises RestAPIError with the agent's code
    when it refuses (``ENV_VAR_NOT_FOUND`` for a missing secret).
    """
    raw = name.encode("utf-8")
    if not _wire.valid_name(raw):
        raise RestAPIError(INVALID_REQUEST, f"secret name must be 1 to {_wire.MAX_NAME} bytes and hold no '=' or NUL")
    c = _Client(socket, token_file)
    t, payload = c.ask(_wire.encode_request(_wire.GET_SECRET, c.token, raw))
    if t != _wire.SECRET:
        raise RestAPIError(BAD_REPLY, f"want a Secret frame, got {_wire.type_name(t)}")
    try:
        return _wire.decode_secret(payload)
    except _wire.WireError as err:
        raise RestAPIError(BAD_REPLY, str(err)) from None


def get_secret(name: str, *, socket: Optional[PathArg] = None, token_file: Optional[PathArg] = None) -> str:
    """Returns the secret ``name`` this workload may read, as text (UTF-8).

    For a file secret, or any secret that is not UTF-8 text, use
    get_secret_bytes. Raises RestAPIError as get_secret_bytes does, and
    INVALID_REQUEST when the secret is not UTF-8 text.
    """
    data = get_secret_bytes(name, socket=socket, token_file=token_file)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise RestAPIError(INVALID_REQUEST, f"secret {name} is not UTF-8 text; use get_secret_bytes") from None


def _fetch_env(socket: Optional[PathArg], token_file: Optional[PathArg]) -> Tuple[int, List[Tuple[str, Optional[str]]]]:
    c = _Client(socket, token_file)
    t, payload = c.ask(_wire.encode_request(_wire.GET_ENV, c.token))
    if t != _wire.ENV:
        raise RestAPIError(BAD_REPLY, f"want an Env frame, got {_wire.type_name(t)}")
    try:
        rev, entries = _wire.decode_env(payload)
    except _wire.WireError as err:
        raise RestAPIError(BAD_REPLY, str(err)) from None
    # As os.environ does: names and values through the file system encoding.
    return rev, [(os.fsdecode(n), None if v is None else os.fsdecode(v)) for n, v in entries]


def get_env(
    environ: Optional[Mapping[str, str]] = None,
    *,
    socket: Optional[PathArg] = None,
    token_file: Optional[PathArg] = None,
) -> Dict[str, str]:
    """Returns the environment ``envlet-exec`` would start this workload with.

    That is ``environ`` (default ``os.environ``) less every ``ENVLET_*``
    name, with the agent's merged variables applied in order: a set entry
    sets the name, an unset one (an empty value at a higher layer) removes
    it. Nothing is changed in this process; see load_env.
    """
    base = os.environ if environ is None else environ
    env = {k: v for k, v in base.items() if not k.startswith("ENVLET_")}
    _, entries = _fetch_env(socket, token_file)
    for name, value in entries:
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def load_env(*, socket: Optional[PathArg] = None, token_file: Optional[PathArg] = None) -> int:
    """Applies this workload's variables to ``os.environ`` and returns the revision served.

    For a program started without ``envlet-exec``. Names the agent sets
    are set, names it clears are removed; the ``ENVLET_*`` variables the
    program started with stay, so that later calls find the agent again.
    """
    rev, entries = _fetch_env(socket, token_file)
    for name, value in entries:
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    return rev
