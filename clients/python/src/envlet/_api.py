"""The admin API, in the verbs of the Python SDK the documents use."""

from __future__ import annotations

import base64
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ._admin import AdminTransport, path
from ._errors import PERMISSION_DENIED, RestAPIError
from ._models import EnvVar, Project, Secret, VariableGroup, _as_dict, _decode_list

__all__ = ["EnvVarsApi", "SecretsApi", "ProjectsApi", "VariableGroupsApi"]

_NOT_FOUND = "ENV_VAR_NOT_FOUND"
_REVEAL: Sequence[Tuple[str, str]] = (("reveal", "1"),)


def _reveal(reveal: bool) -> Optional[Sequence[Tuple[str, str]]]:
    return _REVEAL if reveal else None


def _var_body(value: Optional[str], secret: Optional[bool], from_secret: Optional[str] = None) -> Dict[str, Any]:
    body: Dict[str, Any] = {}
    if from_secret is not None:
        body["from_secret"] = from_secret
    if value is not None or from_secret is None:
        body["value"] = "" if value is None else value
    if secret is not None:
        body["secret"] = secret
    return body


def _clear(v: EnvVar, what: str) -> str:
    """v's value, when the agent revealed it."""
    if v.masked:
        raise RestAPIError(PERMISSION_DENIED, f"the agent did not reveal {what} {v.name} to this caller")
    return v.value


class EnvVarsApi:
    """Account variables of one user: the caller by default, or (for admins) any user.

    Get it with ``envlet.get_env_vars_api()``. Every method raises
    ``envlet.RestAPIError`` with the agent's code on refusal.
    """

    def __init__(self, transport: AdminTransport, user: Optional[str] = None) -> None:
        self._t = transport
        #: The user whose variables this API reads and writes; ``"me"`` is the caller.
        self.user = user or "me"

    def _path(self, *rest: str) -> str:
        return path("users", self.user, "env", *rest)

    def create_env_var(self, name: str, value: str, secret: Optional[bool] = None) -> EnvVar:
        """Creates variable ``name`` with ``value``; ``secret=True`` masks it everywhere.

        Raises RestAPIError ENV_VAR_ALREADY_EXISTS if it exists, and
        ENV_VAR_INVALID_NAME, ENV_VAR_RESERVED_NAME, ENV_VAR_INVALID_VALUE or
        ENV_VAR_LIMIT_EXCEEDED for what the agent refuses.
        """
        return EnvVar._from_json(self._t.request("POST", self._path(name), _var_body(value, secret)))

    def set_env_var(
        self, name: str, value: Optional[str] = None, secret: Optional[bool] = None, *, from_secret: Optional[str] = None
    ) -> EnvVar:
        """Adds or updates variable ``name`` (idempotent).

        Give ``value``, or ``from_secret`` to take the value from the secret
        of that name when a workload starts (the user's own, else the
        project's). Raises RestAPIError for a name or value the agent refuses.
        """
        return EnvVar._from_json(self._t.request("PUT", self._path(name), _var_body(value, secret, from_secret)))

    def update_env_var(self, name: str, value: str, secret: Optional[bool] = None) -> EnvVar:
        """Changes the value of an existing variable.

        Raises RestAPIError ENV_VAR_NOT_FOUND if it does not exist.
        """
        return EnvVar._from_json(self._t.request("PATCH", self._path(name), _var_body(value, secret)))

    def get_env_var(self, name: str, reveal: bool = False) -> Optional[EnvVar]:
        """Returns variable ``name`` as an EnvVar, or None when it does not exist.

        A masked value stays ``"********"`` unless ``reveal=True`` (audited).
        """
        try:
            doc = self._t.request("GET", self._path(name), query=_reveal(reveal))
        except RestAPIError as err:
            if err.code == _NOT_FOUND:
                return None
            raise
        return EnvVar._from_json(doc)

    def get(self, name: str) -> Optional[str]:
        """Returns the value of variable ``name`` in clear, or None when it does not exist.

        A masked value is revealed (and the reveal audited); raises
        RestAPIError PERMISSION_DENIED if the agent does not reveal it.
        """
        v = self.get_env_var(name, reveal=True)
        return None if v is None else _clear(v, "variable")

    def get_env_vars(self, reveal: bool = False) -> List[EnvVar]:
        """Returns every variable, sorted by name; masked values in clear only with ``reveal=True``."""
        return _decode_list(self._t.request("GET", self._path(), query=_reveal(reveal)), "variables", EnvVar._from_json)

    def delete_env_var(self, name: str) -> None:
        """Deletes variable ``name``.

        Raises RestAPIError ENV_VAR_NOT_FOUND if it does not exist.
        """
        self._t.request("DELETE", self._path(name))

    def delete_all(self) -> int:
        """Deletes every variable of the user and returns how many there were."""
        doc = _as_dict(self._t.request("DELETE", self._path()), "delete-all reply")
        n = doc.get("deleted")
        return n if isinstance(n, int) else 0


class SecretsApi:
    """Secrets: the user's private ones, or with ``project=`` a project's shared ones.

    Get it with ``envlet.get_secrets_api()``. A file secret is stored as the
    standard base64 of its bytes, and reads return that base64. Every method
    raises ``envlet.RestAPIError`` with the agent's code on refusal.
    """

    def __init__(self, transport: AdminTransport, user: Optional[str] = None) -> None:
        self._t = transport
        #: The user whose private secrets this API reads and writes; ``"me"`` is the caller.
        self.user = user or "me"

    def _path(self, project: Optional[str], *rest: str) -> str:
        if project is not None:
            return path("projects", project, "secrets", *rest)
        return path("users", self.user, "secrets", *rest)

    def _secret(self, doc: Any, name: str, project: Optional[str]) -> Secret:
        return Secret._from_json(doc, project, lambda: self.delete_secret(name, project=project))

    def create_secret(self, name: str, value: str, project: Optional[str] = None) -> Secret:
        """Creates a text secret: private, or shared with ``project``'s members.

        Raises RestAPIError ENV_VAR_ALREADY_EXISTS if it exists,
        SECRET_TOO_LARGE over 9000 characters, ENV_VAR_INVALID_NAME or
        ENV_VAR_INVALID_VALUE for what the agent refuses.
        """
        return self._write("POST", name, value, False, project)

    def create_secret_from_file(self, name: str, file_path: Union[str, "os.PathLike[str]"], project: Optional[str] = None) -> Secret:
        """Creates a file secret from the bytes of ``file_path`` (``~`` is expanded).

        Raises OSError if the file cannot be read, and RestAPIError as
        create_secret (SECRET_TOO_LARGE when the base64 passes 9000 characters).
        """
        return self._write("POST", name, _file_base64(file_path), True, project)

    def set_secret(self, name: str, value: str, project: Optional[str] = None) -> Secret:
        """Creates or replaces a text secret (idempotent)."""
        return self._write("PUT", name, value, False, project)

    def set_secret_from_file(self, name: str, file_path: Union[str, "os.PathLike[str]"], project: Optional[str] = None) -> Secret:
        """Creates or replaces a file secret from the bytes of ``file_path``."""
        return self._write("PUT", name, _file_base64(file_path), True, project)

    def _write(self, method: str, name: str, value: str, is_file: bool, project: Optional[str]) -> Secret:
        body: Dict[str, Any] = {"value": value}
        if is_file:
            body["file"] = True
        return self._secret(self._t.request(method, self._path(project, name), body), name, project)

    def get_secret(self, name: str, project: Optional[str] = None, reveal: bool = False) -> Optional[Secret]:
        """Returns secret ``name`` as a Secret, or None when it does not exist.

        Its value is ``"********"`` unless ``reveal=True`` (every reveal is audited).
        """
        try:
            doc = self._t.request("GET", self._path(project, name), query=_reveal(reveal))
        except RestAPIError as err:
            if err.code == _NOT_FOUND:
                return None
            raise
        return self._secret(doc, name, project)

    def get(self, name: str, project: Optional[str] = None) -> Optional[str]:
        """Returns the secret's value in clear (base64 for a file secret), or None when missing.

        The read is a reveal, and audited; raises RestAPIError
        PERMISSION_DENIED if the agent does not reveal it.
        """
        s = self.get_secret(name, project=project, reveal=True)
        if s is None:
            return None
        if s.value is None or s.masked:
            raise RestAPIError(PERMISSION_DENIED, f"the agent did not reveal secret {name} to this caller")
        return s.value

    def get_secrets(self, project: Optional[str] = None) -> List[Secret]:
        """Returns every secret (name, kind, size; never values), sorted by name."""
        doc = self._t.request("GET", self._path(project))
        return _decode_list(doc, "secrets", lambda d: self._secret(d, str(d.get("name", "")) if isinstance(d, dict) else "", project))

    def delete_secret(self, name: str, project: Optional[str] = None) -> None:
        """Deletes secret ``name``.

        Raises RestAPIError ENV_VAR_NOT_FOUND if it does not exist.
        """
        self._t.request("DELETE", self._path(project, name))


def _file_base64(file_path: Union[str, "os.PathLike[str]"]) -> str:
    with open(os.path.expanduser(os.fspath(file_path)), "rb") as f:
        data = f.read()
    return base64.b64encode(data).decode("ascii")


class ProjectsApi:
    """Projects, their members and their variables, for members, owners and admins.

    Get it with ``envlet.get_projects_api()``. Creating and deleting
    projects and changing members or group order are for admins; project
    variables are written by owners and admins and read by members.
    """

    def __init__(self, transport: AdminTransport) -> None:
        self._t = transport

    def create_project(self, name: str) -> Project:
        """Creates project ``name`` (admins). Raises RestAPIError ALREADY_EXISTS if it exists."""
        return Project._from_json(self._t.request("POST", path("projects"), {"name": name}))

    def get_project(self, name: str) -> Optional[Project]:
        """Returns project ``name``, or None when it does not exist.

        A non-admin gets RestAPIError PERMISSION_DENIED for a project they may
        not see, whether or not it exists.
        """
        try:
            doc = self._t.request("GET", path("projects", name))
        except RestAPIError as err:
            if err.code == "PROJECT_NOT_FOUND":
                return None
            raise
        return Project._from_json(doc)

    def get_projects(self) -> List[Project]:
        """Returns the projects the caller may see (every project, for admins)."""
        return _decode_list(self._t.request("GET", path("projects")), "projects", Project._from_json)

    def delete_project(self, name: str) -> None:
        """Deletes project ``name`` (admins)."""
        self._t.request("DELETE", path("projects", name))

    def add_member(self, project: str, user: str, owner: bool = False) -> Project:
        """Adds ``user`` to ``project``, as an owner with ``owner=True``; returns the project."""
        body: Dict[str, Any] = {"user": user}
        if owner:
            body["owner"] = True
        return Project._from_json(self._t.request("POST", path("projects", project, "members"), body))

    def remove_member(self, project: str, user: str) -> Project:
        """Removes ``user`` from ``project``; returns the project."""
        return Project._from_json(self._t.request("DELETE", path("projects", project, "members", user)))

    def set_groups(self, project: str, groups: Sequence[str]) -> Project:
        """Sets the project's whole group order (admins; a later group wins).

        Raises RestAPIError GROUP_NOT_FOUND for a group that does not exist.
        """
        return Project._from_json(self._t.request("PUT", path("projects", project, "groups"), {"groups": list(groups)}))

    def get_env_vars(self, project: str, reveal: bool = False) -> List[EnvVar]:
        """Returns the project's variables, sorted by name; masked values in clear only with ``reveal=True``."""
        doc = self._t.request("GET", path("projects", project, "env"), query=_reveal(reveal))
        return _decode_list(doc, "variables", EnvVar._from_json)

    def get_env_var(self, project: str, name: str, reveal: bool = False) -> Optional[EnvVar]:
        """Returns the project's variable ``name``, or None when it does not exist."""
        for v in self.get_env_vars(project, reveal=reveal):
            if v.name == name:
                return v
        return None

    def get(self, project: str, name: str) -> Optional[str]:
        """Returns the value of the project's variable ``name`` in clear, or None when missing.

        Raises RestAPIError PERMISSION_DENIED if the agent does not reveal it
        (only owners and admins see a masked project value in clear).
        """
        v = self.get_env_var(project, name, reveal=True)
        return None if v is None else _clear(v, "variable")

    def set_env_var(
        self,
        project: str,
        name: str,
        value: Optional[str] = None,
        secret: Optional[bool] = None,
        *,
        from_secret: Optional[str] = None,
    ) -> EnvVar:
        """Adds or updates the project's variable ``name`` (owners and admins)."""
        doc = self._t.request("PUT", path("projects", project, "env", name), _var_body(value, secret, from_secret))
        return EnvVar._from_json(doc)

    def delete_env_var(self, project: str, name: str) -> None:
        """Deletes the project's variable ``name``. Raises RestAPIError ENV_VAR_NOT_FOUND if missing."""
        self._t.request("DELETE", path("projects", project, "env", name))


class VariableGroupsApi:
    """Variable groups: named bundles of variables assigned to projects (written by admins).

    Get it with ``envlet.get_variable_groups_api()``. Members of a project a
    group is assigned to may read it; everything else is for admins.
    """

    def __init__(self, transport: AdminTransport) -> None:
        self._t = transport

    def create_group(self, name: str) -> VariableGroup:
        """Creates group ``name``. Raises RestAPIError GROUP_ALREADY_EXISTS if it exists."""
        return VariableGroup._from_json(self._t.request("POST", path("groups"), {"name": name}))

    def get_group(self, name: str, reveal: bool = False) -> Optional[VariableGroup]:
        """Returns group ``name`` with its variables, or None when it does not exist (admins).

        Others get RestAPIError PERMISSION_DENIED for a group not assigned to
        one of their projects, whether or not it exists.
        """
        try:
            doc = self._t.request("GET", path("groups", name), query=_reveal(reveal))
        except RestAPIError as err:
            if err.code == "GROUP_NOT_FOUND":
                return None
            raise
        return VariableGroup._from_json(doc)

    def get_groups(self) -> List[VariableGroup]:
        """Returns the groups the caller may see (all, for admins), without their variables."""
        return _decode_list(self._t.request("GET", path("groups")), "groups", VariableGroup._from_json)

    def delete_group(self, name: str) -> None:
        """Deletes group ``name`` and removes it from every project's order."""
        self._t.request("DELETE", path("groups", name))

    def set_env_var(self, group: str, name: str, value: str, secret: Optional[bool] = None) -> EnvVar:
        """Adds or updates variable ``name`` in ``group``. Raises RestAPIError GROUP_NOT_FOUND."""
        return EnvVar._from_json(self._t.request("PUT", path("groups", group, "env", name), _var_body(value, secret)))

    def delete_env_var(self, group: str, name: str) -> None:
        """Deletes variable ``name`` from ``group``. Raises RestAPIError ENV_VAR_NOT_FOUND if missing."""
        self._t.request("DELETE", path("groups", group, "env", name))

    def assign(self, group: str, projects: Sequence[str]) -> VariableGroup:
        """Appends ``group`` to each project's order (a no-op where it is already)."""
        return VariableGroup._from_json(self._t.request("POST", path("groups", group, "assign"), {"projects": list(projects)}))

    def unassign(self, group: str, projects: Sequence[str]) -> VariableGroup:
        """Removes ``group`` from each project's order.

        Raises RestAPIError NOT_FOUND, changing nothing, if a project does not have it.
        """
        return VariableGroup._from_json(self._t.request("POST", path("groups", group, "unassign"), {"projects": list(projects)}))
