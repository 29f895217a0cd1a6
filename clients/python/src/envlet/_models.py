"""The objects the API returns: small dataclasses that never print a hidden value."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, List, Mapping, Optional

from ._errors import BAD_REPLY, PERMISSION_DENIED, RestAPIError

__all__ = ["EnvVar", "Secret", "Project", "VariableGroup", "Identity", "MASK"]

#: What the agent sends in place of a masked value.
MASK = "********"

# The agent masks a value whose name holds one of these words (DESIGN §1);
# the client applies the same rule to keep revealed values out of repr.
_SENSITIVE_NAME = re.compile(r"key|token|secret|password", re.IGNORECASE)

_RFC3339 = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:([Zz])|([+-])(\d\d):(\d\d))$"
)


def _timestamp(v: Any) -> Optional[datetime]:
    """Reads a timestamp the way the agent may send one: RFC 3339 text (Go's
    time.Time, nanoseconds included) or seconds since the epoch. Anything
    else is None: a field the client cannot read must not break a reply."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        try:
            return datetime.fromtimestamp(v, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(v, str):
        return None
    m = _RFC3339.match(v)
    if not m:
        return None
    y, mo, d, h, mi, s, frac, z, sign, oh, om = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    tz = timezone.utc
    if not z:
        off = timedelta(hours=int(oh), minutes=int(om))
        tz = timezone(off if sign == "+" else -off)
    try:
        return datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), micro, tzinfo=tz)
    except ValueError:
        return None


def _str(doc: Mapping[str, Any], key: str, default: str = "") -> str:
    v = doc.get(key, default)
    return v if isinstance(v, str) else default


def _opt_str(doc: Mapping[str, Any], key: str) -> Optional[str]:
    v = doc.get(key)
    return v if isinstance(v, str) else None


def _bool(doc: Mapping[str, Any], key: str) -> bool:
    return doc.get(key) is True


def _int(doc: Mapping[str, Any], key: str) -> int:
    v = doc.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _strs(doc: Mapping[str, Any], key: str) -> List[str]:
    v = doc.get(key)
    return [s for s in v if isinstance(s, str)] if isinstance(v, list) else []


def _object(doc: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(doc, dict) or not isinstance(doc.get("name", ""), str):
        raise RestAPIError(BAD_REPLY, f"the agent sent a {what} that is not a JSON object with a name")
    return doc


def _list(doc: Any, what: str) -> List[Any]:
    if not isinstance(doc, list):
        raise RestAPIError(BAD_REPLY, f"the agent sent {what} that is not a JSON array")
    return doc


@dataclass(frozen=True)
class EnvVar:
    """One environment variable as the agent reports it.

    ``value`` is ``"********"`` and ``masked`` is True when the agent masked
    it (a secret-flagged variable, or a name holding key, token, secret or
    password) and it was not revealed. ``from_secret`` names the secret a
    variable set with ``from_secret`` takes its value from. The timestamps
    and ``updated_by`` are filled when the agent's store has them, None
    otherwise.

    ``repr`` never shows a masked value, nor a revealed value that would be
    masked: only a plain, unmasked variable's value is printed.
    """

    name: str
    value: str = field(repr=False)
    secret: bool = False
    masked: bool = False
    from_secret: Optional[str] = None
    created_at: Optional[datetime] = None
    updated_at: Optional[datetime] = None
    updated_by: Optional[str] = None

    @property
    def sensitive(self) -> bool:
        """True when the value is one the agent masks unless revealed."""
        return self.masked or self.secret or self.from_secret is not None or bool(_SENSITIVE_NAME.search(self.name))

    def __repr__(self) -> str:
        shown = "'<hidden>'" if self.sensitive else repr(self.value)
        extra = f", from_secret={self.from_secret!r}" if self.from_secret is not None else ""
        return (
            f"EnvVar(name={self.name!r}, value={shown}, secret={self.secret!r}, masked={self.masked!r}{extra}, "
            f"created_at={self.created_at!r}, updated_at={self.updated_at!r}, updated_by={self.updated_by!r})"
        )

    __str__ = __repr__

    @classmethod
    def _from_json(cls, doc: Any) -> "EnvVar":
        d = _object(doc, "variable")
        return cls(
            name=_str(d, "name"),
            value=_str(d, "value"),
            secret=_bool(d, "secret"),
            masked=_bool(d, "masked"),
            from_secret=_opt_str(d, "from_secret"),
            created_at=_timestamp(d.get("created_at")),
            updated_at=_timestamp(d.get("updated_at")),
            updated_by=_opt_str(d, "updated_by"),
        )


@dataclass(frozen=True)
class Secret:
    """A secret: text, or a file's bytes kept as base64.

    ``kind`` is ``"text"`` or ``"file"``; ``size`` counts the characters
    stored (a file's base64). ``value`` is None in listings, ``"********"``
    with ``masked`` True unless read with reveal, and otherwise the stored
    text (base64 for a file; ``content()`` gives the bytes). ``project`` is
    the project of a shared secret, None for a private one. The timestamps
    and ``updated_by`` are filled when the agent's store has them.

    ``repr`` never shows the value, revealed or not.
    """

    name: str
    kind: str = "text"
    size: int = 0
    value: Optional[str] = field(default=None, repr=False)
    masked: bool = False
    project: Optional[str] = None
    created_at: Optional[datetime] = None
    updated_at: Optional[datetime] = None
    updated_by: Optional[str] = None
    _delete: Optional[Callable[[], None]] = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        shown = "None" if self.value is None else "'<hidden>'"
        return (
            f"Secret(name={self.name!r}, kind={self.kind!r}, size={self.size!r}, value={shown}, "
            f"masked={self.masked!r}, project={self.project!r}, created_at={self.created_at!r}, "
            f"updated_at={self.updated_at!r}, updated_by={self.updated_by!r})"
        )

    __str__ = __repr__

    @property
    def revealed(self) -> bool:
        """True when ``value`` holds the stored value (read with reveal)."""
        return self.value is not None and not self.masked

    def content(self) -> bytes:
        """The secret's bytes: a file secret's base64 decoded, a text secret as UTF-8.

        Raises RestAPIError PERMISSION_DENIED when the value was not revealed.
        """
        if self.value is None or self.masked:
            raise RestAPIError(
                PERMISSION_DENIED, f"secret {self.name} was not revealed (read it with get_secret(name, reveal=True))"
            )
        if self.kind == "file":
            try:
                return base64.b64decode(self.value, validate=True)
            except (binascii.Error, ValueError):
                raise RestAPIError(BAD_REPLY, f"the agent sent file secret {self.name} in a form that is not base64") from None
        return self.value.encode("utf-8")

    def delete(self) -> None:
        """Deletes this secret (from the project it belongs to, if any).

        Raises RestAPIError ENV_VAR_NOT_FOUND if it no longer exists.
        """
        if self._delete is None:
            raise RestAPIError(PERMISSION_DENIED, f"secret {self.name} was not read through an API and cannot delete itself")
        self._delete()

    @classmethod
    def _from_json(cls, doc: Any, project: Optional[str] = None, delete: Optional[Callable[[], None]] = None) -> "Secret":
        d = _object(doc, "secret")
        return cls(
            name=_str(d, "name"),
            kind=_str(d, "kind", "text"),
            size=_int(d, "size"),
            value=_opt_str(d, "value"),
            masked=_bool(d, "masked"),
            project=project,
            created_at=_timestamp(d.get("created_at")),
            updated_at=_timestamp(d.get("updated_at")),
            updated_by=_opt_str(d, "updated_by"),
            _delete=delete,
        )


@dataclass(frozen=True)
class Project:
    """A project: its owners, its other members, and its variable groups in order (a later group wins)."""

    name: str
    owners: List[str] = field(default_factory=list)
    members: List[str] = field(default_factory=list)
    groups: List[str] = field(default_factory=list)
    created_at: Optional[datetime] = None
    updated_at: Optional[datetime] = None
    updated_by: Optional[str] = None

    @classmethod
    def _from_json(cls, doc: Any) -> "Project":
        d = _object(doc, "project")
        return cls(
            name=_str(d, "name"),
            owners=_strs(d, "owners"),
            members=_strs(d, "members"),
            groups=_strs(d, "groups"),
            created_at=_timestamp(d.get("created_at")),
            updated_at=_timestamp(d.get("updated_at")),
            updated_by=_opt_str(d, "updated_by"),
        )


@dataclass(frozen=True)
class VariableGroup:
    """A variable group: the projects it is assigned to, how many variables it
    holds, and (from ``get_group``) the variables themselves, masked as usual."""

    name: str
    projects: List[str] = field(default_factory=list)
    count: int = 0
    variables: List[EnvVar] = field(default_factory=list)
    created_at: Optional[datetime] = None
    updated_at: Optional[datetime] = None
    updated_by: Optional[str] = None

    @classmethod
    def _from_json(cls, doc: Any) -> "VariableGroup":
        d = _object(doc, "group")
        raw = d.get("variables")
        return cls(
            name=_str(d, "name"),
            projects=_strs(d, "projects"),
            count=_int(d, "count"),
            variables=[EnvVar._from_json(v) for v in raw] if isinstance(raw, list) else [],
            created_at=_timestamp(d.get("created_at")),
            updated_at=_timestamp(d.get("updated_at")),
            updated_by=_opt_str(d, "updated_by"),
        )


@dataclass(frozen=True)
class Identity:
    """Who the agent says the caller is: user name, uid, and whether an admin."""

    user: str
    uid: int
    admin: bool

    @classmethod
    def _from_json(cls, doc: Any) -> "Identity":
        if not isinstance(doc, dict):
            raise RestAPIError(BAD_REPLY, "the agent sent a whoami reply that is not a JSON object")
        return cls(user=_str(doc, "user"), uid=_int(doc, "uid"), admin=_bool(doc, "admin"))


def _decode_list(doc: Any, what: str, make: Callable[[Any], Any]) -> List[Any]:
    return [make(v) for v in _list(doc, what)]


def _as_dict(doc: Any, what: str) -> Dict[str, Any]:
    if not isinstance(doc, dict):
        raise RestAPIError(BAD_REPLY, f"the agent sent a {what} that is not a JSON object")
    return doc
