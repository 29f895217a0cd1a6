"""The admin API transport: HTTP/1.1 + JSON over the agent's admin Unix socket."""

from __future__ import annotations

import http.client
import json
import os
import socket as _socket
from typing import Any, Dict, Mapping, Optional, Sequence
from urllib.parse import quote, urlencode

from ._errors import AGENT_UNAVAILABLE, BAD_REPLY, INVALID_REQUEST, AgentUnavailableError, RestAPIError

#: Where the agent serves the admin API unless ``ENVLET_ADMIN_SOCKET`` or an
#: explicit path says otherwise.
DEFAULT_ADMIN_SOCKET = "/run/envlet/admin.sock"

# What the client reads of one reply at most, as the CLI: a confused agent
# cannot make it allocate without limit.
_MAX_REPLY = 64 << 20


def admin_socket_path(socket: Optional[str] = None) -> str:
    """The admin socket to use: ``socket``, else ``$ENVLET_ADMIN_SOCKET``, else the default."""
    if socket:
        return os.path.expanduser(socket)
    return os.environ.get("ENVLET_ADMIN_SOCKET") or DEFAULT_ADMIN_SOCKET


def path(*segments: str) -> str:
    """Joins segments into an API path under /v1, each one escaped whole.

    A name holding ``/`` stays one segment, so the agent refuses it as an
    invalid name rather than reaching another resource.
    """
    for s in segments:
        # The agent's router would clean these away and reach another
        # resource (env/.. is the account itself): refuse them here.
        if s in ("", ".", ".."):
            raise RestAPIError(INVALID_REQUEST, f"a name may not be {s!r}")
    return "/v1/" + "/".join(quote(s, safe="") for s in segments)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: Optional[float]) -> None:
        super().__init__("envlet", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower() if err.strerror[:1].isupper() else err.strerror
    if isinstance(err, _socket.timeout):
        return "timed out"
    return str(err) or type(err).__name__


class AdminTransport:
    """Sends admin API requests to one socket, one connection per request.

    A connection per request keeps the client safe to share between threads
    and never holds one of the caller's ``max_conns_per_uid`` connections
    while idle.
    """

    def __init__(self, socket: Optional[str] = None, timeout: Optional[float] = 30.0) -> None:
        self.socket = admin_socket_path(socket)
        self.timeout = timeout

    def request(
        self,
        method: str,
        api_path: str,
        body: Optional[Mapping[str, Any]] = None,
        query: Optional[Sequence[tuple[str, str]]] = None,
    ) -> Any:
        """Sends one request and returns the decoded JSON of a 2xx reply (None for 204).

        Raises AgentUnavailableError when the socket cannot be reached or the
        connection breaks, RestAPIError with the agent's code for an error
        reply, and RestAPIError BAD_REPLY for a reply the client cannot read.
        """
        url = api_path + ("?" + urlencode(list(query)) if query else "")
        headers: Dict[str, str] = {"Accept": "application/json"}
        data: Optional[bytes] = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        conn = _UnixHTTPConnection(self.socket, self.timeout)
        try:
            try:
                conn.connect()
            except OSError as err:
                raise AgentUnavailableError(
                    AGENT_UNAVAILABLE,
                    self.socket,
                    f"connect {self.socket}: {_reason(err)} (is envletd running? set ENVLET_ADMIN_SOCKET or envlet.login(socket=...))",
                ) from None
            try:
                conn.request(method, url, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read(_MAX_REPLY + 1)
            except (OSError, http.client.HTTPException) as err:
                raise AgentUnavailableError(
                    AGENT_UNAVAILABLE, self.socket, f"{method} {api_path} on {self.socket}: {_reason(err)}"
                ) from None
        finally:
            conn.close()
        if len(raw) > _MAX_REPLY:
            raise RestAPIError(BAD_REPLY, f"reply to {method} {api_path} is larger than {_MAX_REPLY} bytes", resp.status)
        if 200 <= resp.status < 300:
            if resp.status == 204 or not raw:
                return None
            try:
                return json.loads(raw)
            except ValueError:
                raise RestAPIError(BAD_REPLY, f"reply to {method} {api_path} is not JSON", resp.status) from None
        raise _error_from_reply(method, api_path, resp.status, raw)


def _error_from_reply(method: str, api_path: str, status: int, raw: bytes) -> RestAPIError:
    try:
        doc = json.loads(raw)
        err = doc["error"]
        code, message = err["code"], err.get("message", "")
        if isinstance(code, str) and code and isinstance(message, str):
            return RestAPIError(code, message, status)
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    return RestAPIError(BAD_REPLY, f"{method} {api_path}: HTTP {status} without an error body", status)
