"""The one exception type of the client, and the codes the client makes itself."""

from __future__ import annotations

from typing import Optional

__all__ = [
    "RestAPIError",
    "AgentUnavailableError",
    "AGENT_UNAVAILABLE",
    "AGENT_UNREACHABLE",
    "BAD_REPLY",
    "TOKEN_FILE",
    "INVALID_REQUEST",
    "PERMISSION_DENIED",
]

#: The admin socket cannot be reached, or the connection broke (the code
#: the ``envlet`` CLI uses for the same failure).
AGENT_UNAVAILABLE = "AGENT_UNAVAILABLE"
#: The workload socket cannot be reached (the code ``envlet-exec`` uses).
AGENT_UNREACHABLE = "AGENT_UNREACHABLE"
#: The agent answered something the client cannot read.
BAD_REPLY = "BAD_REPLY"
#: The workload token file cannot be read, or holds too long a token.
TOKEN_FILE = "TOKEN_FILE"
#: A local input the agent would refuse anyway (for example a secret name
#: that cannot travel in a workload request).
INVALID_REQUEST = "INVALID_REQUEST"
#: Not allowed; also raised by the client when the agent did not reveal a
#: value that was asked for in clear.
PERMISSION_DENIED = "PERMISSION_DENIED"


class RestAPIError(Exception):
    """An error from the envlet agent, or from reaching it.

    ``code`` is the agent's stable error code (``ENV_VAR_NOT_FOUND``,
    ``PERMISSION_DENIED``, ``ENV_VAR_ALREADY_EXISTS``, …; see
    docs/admin-api.md) or one the client makes itself
    (``AGENT_UNAVAILABLE``, ``AGENT_UNREACHABLE``, ``BAD_REPLY``,
    ``TOKEN_FILE``, ``INVALID_REQUEST``). ``message`` is for people and
    never holds a value. ``status`` is the HTTP status of an admin API
    reply, ``None`` when there was none.
    """

    code: str
    message: str
    status: Optional[int]

    def __init__(self, code: str, message: str, status: Optional[int] = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, status={self.status!r})"


class AgentUnavailableError(RestAPIError):
    """The agent's socket cannot be reached, or the connection broke.

    ``socket`` is the path that was tried; the message names it too.
    """

    socket: str

    def __init__(self, code: str, socket: str, message: str) -> None:
        super().__init__(code, message)
        self.socket = socket
