"""envlet: environment variables and secrets for every workload on a node.

The client of the envlet agent, in the verbs of the Python SDK the
platform documents use::

    import envlet
    envlet.login()                      # optional; a socket path may be given
    api = envlet.get_env_vars_api()
    api.set_env_var("HF_TOKEN", "hf_...")
    api.get("HF_TOKEN")                 # the value, or None when missing

    secrets_api = envlet.get_secrets_api()
    secrets_api.create_secret("my_secret", "Fk3MoPlQXCQvPo")

Administration goes over the agent's admin socket: ``socket=`` given to
``login``, else ``$ENVLET_ADMIN_SOCKET``, else ``/run/envlet/admin.sock``;
the agent knows the caller by its uid. Inside a workload,
``envlet.workload.get_secret(name)`` and ``envlet.workload.get_env()`` use
the workload socket, as ``envlet-exec`` does.

Every error is an ``envlet.RestAPIError`` with ``.code`` (the agent's code,
such as ``ENV_VAR_NOT_FOUND``) and ``.message``; an agent that cannot be
reached is an ``envlet.AgentUnavailableError`` naming the socket.
Standard library only; Python 3.9 or later.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, Optional

from . import workload
from ._admin import DEFAULT_ADMIN_SOCKET, AdminTransport, path
from ._api import EnvVarsApi, ProjectsApi, SecretsApi, VariableGroupsApi
from ._errors import AgentUnavailableError, RestAPIError
from ._models import MASK, EnvVar, Identity, Project, Secret, VariableGroup, _as_dict

__all__ = [
    "Connection",
    "login",
    "connection",
    "get_env_vars_api",
    "get_secrets_api",
    "get_projects_api",
    "get_variable_groups_api",
    "whoami",
    "status",
    "EnvVarsApi",
    "SecretsApi",
    "ProjectsApi",
    "VariableGroupsApi",
    "EnvVar",
    "Secret",
    "Project",
    "VariableGroup",
    "Identity",
    "RestAPIError",
    "AgentUnavailableError",
    "DEFAULT_ADMIN_SOCKET",
    "MASK",
    "workload",
]

#: The version of this client.
__version__ = "0.1.0"


class Connection:
    """One agent's admin API: the socket to reach it by, and the APIs over it.

    ``socket`` defaults to ``$ENVLET_ADMIN_SOCKET``, else
    ``/run/envlet/admin.sock``; ``timeout`` bounds each request, in seconds
    (None waits forever). Creating one does not connect; every request opens
    its own connection, so a Connection may be shared between threads.
    """

    def __init__(self, socket: Optional[str] = None, timeout: Optional[float] = 30.0) -> None:
        self._t = AdminTransport(socket, timeout)

    @property
    def socket(self) -> str:
        """The admin socket this connection uses."""
        return self._t.socket

    def __repr__(self) -> str:
        return f"Connection(socket={self.socket!r})"

    def get_env_vars_api(self, user: Optional[str] = None) -> EnvVarsApi:
        """The account variables of the caller, or of ``user`` (admins)."""
        return EnvVarsApi(self._t, user)

    def get_secrets_api(self, user: Optional[str] = None) -> SecretsApi:
        """The private secrets of the caller, or of ``user`` (admins read), and project secrets."""
        return SecretsApi(self._t, user)

    def get_projects_api(self) -> ProjectsApi:
        """Projects, their members and their variables."""
        return ProjectsApi(self._t)

    def get_variable_groups_api(self) -> VariableGroupsApi:
        """Variable groups."""
        return VariableGroupsApi(self._t)

    def whoami(self) -> Identity:
        """Who the agent says the caller is."""
        return Identity._from_json(self._t.request("GET", path("whoami")))

    def status(self) -> Dict[str, Any]:
        """The agent's status: backend, revision, staleness and counts, as the agent sends them."""
        return _as_dict(self._t.request("GET", path("status")), "status reply")


_lock = threading.Lock()
_default: Optional[Connection] = None


def login(socket: Optional[str] = None, timeout: Optional[float] = 30.0) -> Connection:
    """Connects to the agent and makes that the connection the module functions use.

    Optional: without it the module functions use ``$ENVLET_ADMIN_SOCKET``,
    else ``/run/envlet/admin.sock``. It asks the agent who the caller is, so
    an agent that cannot be reached fails here, with an
    AgentUnavailableError that names the socket.
    """
    global _default
    conn = Connection(socket, timeout)
    conn.whoami()
    with _lock:
        _default = conn
    return conn


def connection() -> Connection:
    """The connection the module functions use: the last login's, else one to the default socket."""
    global _default
    with _lock:
        if _default is None:
            _default = Connection()
        return _default


def get_env_vars_api(user: Optional[str] = None) -> EnvVarsApi:
    """The account variables of the caller, or of ``user`` (admins). See EnvVarsApi."""
    return connection().get_env_vars_api(user)


def get_secrets_api(user: Optional[str] = None) -> SecretsApi:
    """The caller's secrets (or ``user``'s, for admins), and project secrets. See SecretsApi."""
    return connection().get_secrets_api(user)


def get_projects_api() -> ProjectsApi:
    """Projects, members and project variables. See ProjectsApi."""
    return connection().get_projects_api()


def get_variable_groups_api() -> VariableGroupsApi:
    """Variable groups. See VariableGroupsApi."""
    return connection().get_variable_groups_api()


def whoami() -> Identity:
    """Who the agent says the caller is (user, uid, admin)."""
    return connection().whoami()


def status() -> Dict[str, Any]:
    """The agent's status (backend, revision, staleness, counts)."""
    return connection().status()
