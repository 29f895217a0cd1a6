"""The objects: what replies of a newer agent (timestamps, unknown fields)
become, and that repr keeps hidden values hidden. No agent needed."""

from __future__ import annotations

import ast
import inspect
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import envlet
import envlet.workload
from envlet._models import EnvVar, Project, Secret, VariableGroup

SRC = Path(envlet.__file__).parent


def test_timestamps_and_unknown_fields() -> None:
    """Issue 12 adds created_at, updated_at, updated_by to every object; later
    agents may add more. Both must work with this client."""
    doc = {"name": "X", "value": "v", "secret": False, "masked": False,
           "created_at": "2026-12-03T17:49:00.123456789Z", "updated_at": "2026-12-03T19:49:00+02:00",
           "updated_by": "alice", "etag": "abc", "labels": {"a": 1}}
    v = EnvVar._from_json(doc)
    assert v.created_at == datetime(2026, 12, 3, 17, 49, 0, 123456, tzinfo=timezone.utc)
    assert v.updated_at == datetime(2026, 12, 3, 19, 49, tzinfo=timezone(timedelta(hours=2)))
    assert v.updated_by == "alice"
    assert EnvVar._from_json({"name": "X", "value": "v", "created_at": 1796320140}).created_at == \
        datetime.fromtimestamp(1796320140, tz=timezone.utc)
    for odd in ("yesterday", None, True, [], "2026-13-45T00:00:00Z"):
        assert EnvVar._from_json({"name": "X", "value": "v", "created_at": odd}).created_at is None
    s = Secret._from_json({"name": "S", "kind": "file", "size": 4, "future": True, "updated_by": "bob",
                           "created_at": "2026-01-02T03:04:05Z"})
    assert (s.updated_by, s.created_at) == ("bob", datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    p = Project._from_json({"name": "p", "owners": ["a"], "members": [], "groups": ["g"], "quota": 3, "updated_by": "root"})
    assert (p.owners, p.groups, p.updated_by) == (["a"], ["g"], "root")
    g = VariableGroup._from_json({"name": "g", "projects": ["p"], "count": 1, "variables": [doc], "owner": "x"})
    assert g.variables[0].updated_by == "alice"


def test_bad_shapes_are_bad_reply() -> None:
    for bad in ([], "x", None, {"name": 3}):
        with pytest.raises(envlet.RestAPIError) as e:
            EnvVar._from_json(bad)
        assert e.value.code == "BAD_REPLY"


def test_repr_hides_values() -> None:
    plain = EnvVar("LOG_LEVEL", "debug")
    assert "debug" in repr(plain)
    for v in (EnvVar("X", "s3cr3t", secret=True), EnvVar("MY_API_KEY", "s3cr3t"), EnvVar("a_Password", "s3cr3t"),
              EnvVar("Y", "s3cr3t", masked=True), EnvVar("Z", "s3cr3t", from_secret="S")):
        assert "s3cr3t" not in repr(v) and "s3cr3t" not in str(v) and "<hidden>" in repr(v)
    s = Secret("S", value="s3cr3t")
    assert "s3cr3t" not in repr(s) and "s3cr3t" not in str(s) and "s3cr3t" not in repr([s])
    assert "s3cr3t" not in repr(VariableGroup("g", variables=[EnvVar("T", "s3cr3t", secret=True)]))
    err = envlet.RestAPIError("PERMISSION_DENIED", "no", 403)
    assert (err.code, err.message, err.status, str(err)) == ("PERMISSION_DENIED", "no", 403, "PERMISSION_DENIED: no")


def test_every_public_name_has_a_docstring() -> None:
    missing = []
    for mod in (envlet, envlet.workload):
        for name in mod.__all__:
            obj = getattr(mod, name)
            if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj):
                if not inspect.getdoc(obj):
                    missing.append(f"{mod.__name__}.{name}")
            if inspect.isclass(obj) and obj.__module__.startswith("envlet"):
                for attr, member in vars(obj).items():
                    if attr.startswith("_"):
                        continue
                    if (inspect.isfunction(member) or isinstance(member, property)) and not inspect.getdoc(member):
                        missing.append(f"{mod.__name__}.{name}.{attr}")
    assert missing == []


def test_standard_library_only() -> None:
    import sys

    stdlib = set(sys.stdlib_module_names) if hasattr(sys, "stdlib_module_names") else None
    for f in SRC.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for n in names:
                top = n.split(".")[0]
                assert top == "__future__" or stdlib is None or top in stdlib, f"{f.name} imports {n}"
    assert (SRC / "py.typed").exists()
