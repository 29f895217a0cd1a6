"""Every verb of the admin API client against a real agent, as its admin (root),
and every error code those verbs can raise. Canary values are planted and
searched for in every repr, error and the agent's log."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import threading
import uuid
from pathlib import Path
from typing import Iterator, List

import pytest

import envlet
from conftest import Agent, Runner, free_uid

CANARY = "canary-" + uuid.uuid4().hex


def uniq(prefix: str) -> str:
    return prefix + "_" + uuid.uuid4().hex[:8]


@pytest.fixture()
def conn(agent: Agent) -> envlet.Connection:
    return envlet.Connection(agent.admin_socket)


def code_of(fn: object, *args: object, **kw: object) -> envlet.RestAPIError:
    with pytest.raises(envlet.RestAPIError) as e:
        fn(*args, **kw)  # type: ignore[operator]
    assert CANARY not in str(e.value) and CANARY not in repr(e.value)
    return e.value


def test_whoami_and_status(conn: envlet.Connection) -> None:
    me = conn.whoami()
    assert (me.user, me.uid, me.admin) == ("root", 0, True)
    st = conn.status()
    assert st["backend"] == "local" and isinstance(st["revision"], int)


def test_env_vars_every_verb(conn: envlet.Connection) -> None:
    user = str(free_uid())  # an account of its own, written by the admin
    api = conn.get_env_vars_api(user)
    assert api.user == user
    plain, hidden = uniq("PLAIN"), uniq("DB_PASSWORD")
    v = api.create_env_var(plain, "one")
    assert (v.name, v.value, v.secret, v.masked) == (plain, "one", False, False)
    assert api.get(plain) == "one"
    s = api.create_env_var(uniq("FLAGGED"), CANARY, secret=True)
    assert (s.secret, s.masked, s.value) == (True, True, envlet.MASK)
    assert api.set_env_var(hidden, CANARY).masked  # name holds "password"
    assert api.get(hidden) == CANARY
    got = api.get_env_var(hidden)
    assert got is not None and got.value == envlet.MASK and got.masked
    shown = api.get_env_var(hidden, reveal=True)
    assert shown is not None and shown.value == CANARY and not shown.masked
    assert api.update_env_var(plain, "two").value == "two"
    assert api.update_env_var(plain, "three", secret=True).secret
    names = [x.name for x in api.get_env_vars()]
    assert names == sorted(names) and plain in names and hidden in names
    assert all(x.value == envlet.MASK for x in api.get_env_vars() if x.masked)
    assert CANARY in [x.value for x in api.get_env_vars(reveal=True)]
    api.delete_env_var(plain)
    assert api.get_env_var(plain) is None and api.get(plain) is None
    assert api.delete_all() == 2
    assert api.get_env_vars() == []
    assert api.delete_all() == 0
    for r in (repr(got), repr(shown), repr(s), str(shown)):
        assert CANARY not in r and "<hidden>" in r


def test_env_var_from_secret(conn: envlet.Connection) -> None:
    api = conn.get_env_vars_api()
    name = uniq("FROM")
    v = api.set_env_var(name, from_secret="some_secret")
    assert (v.from_secret, v.masked, v.secret) == ("some_secret", True, True)
    assert "some_secret" in repr(v) and "<hidden>" in repr(v)
    api.delete_env_var(name)


def test_env_var_errors(conn: envlet.Connection) -> None:
    api = conn.get_env_vars_api(str(free_uid()))
    assert code_of(api.create_env_var, "1BAD", "x").code == "ENV_VAR_INVALID_NAME"
    # A name holding '/' stays one path segment: refused as a name, not routed elsewhere.
    e = code_of(api.set_env_var, "a/b", "x")
    assert (e.code, e.status) == ("ENV_VAR_INVALID_NAME", 400)
    # Names the router would clean away are refused before anything is sent.
    for odd in ("", ".", ".."):
        assert code_of(api.delete_env_var, odd).code == "INVALID_REQUEST"
        assert code_of(api.get_env_var, odd).code == "INVALID_REQUEST"
    assert code_of(api.set_env_var, "PROJECT_ID", CANARY).code == "ENV_VAR_RESERVED_NAME"
    assert code_of(api.set_env_var, "HOPS_X", CANARY).code == "ENV_VAR_RESERVED_NAME"
    assert code_of(api.set_env_var, "NUL_VALUE", CANARY + "\x00").code == "ENV_VAR_INVALID_VALUE"
    assert code_of(api.set_env_var, "BIG_VALUE", CANARY * 2000).code == "ENV_VAR_INVALID_VALUE"
    assert code_of(api.update_env_var, "NOPE", CANARY).code == "ENV_VAR_NOT_FOUND"
    assert code_of(api.delete_env_var, "NOPE").code == "ENV_VAR_NOT_FOUND"
    for i in range(64):
        api.set_env_var(f"V{i}", "x")
    e = code_of(api.set_env_var, "V64", CANARY)
    assert (e.code, e.status) == ("ENV_VAR_LIMIT_EXCEEDED", 400)
    assert api.delete_all() == 64


def test_secrets_every_verb(conn: envlet.Connection, tmp_path: Path) -> None:
    sa = conn.get_secrets_api()
    text, blob = uniq("text"), uniq("blob")
    s = sa.create_secret(text, CANARY)
    assert (s.name, s.kind, s.size, s.value, s.project) == (text, "text", len(CANARY), None, None)
    got = sa.get_secret(text)
    assert got is not None and got.masked and got.value == envlet.MASK and not got.revealed
    with pytest.raises(envlet.RestAPIError) as e:
        got.content()
    assert e.value.code == "PERMISSION_DENIED"
    shown = sa.get_secret(text, reveal=True)
    assert shown is not None and shown.revealed and shown.value == CANARY and shown.content() == CANARY.encode()
    assert sa.get(text) == CANARY
    assert sa.set_secret(text, CANARY + "2").size == len(CANARY) + 1
    assert sa.get(text) == CANARY + "2"
    # A file secret of every byte value, byte for byte both ways.
    data = bytes(range(256)) * 20 + b"\x00" + os.urandom(300)
    p = tmp_path / "f.bin"
    p.write_bytes(data)
    f = sa.create_secret_from_file(blob, p)
    assert (f.kind, f.size) == ("file", len(base64.b64encode(data)))
    assert base64.b64decode(sa.get(blob) or "") == data
    revealed = sa.get_secret(blob, reveal=True)
    assert revealed is not None and revealed.content() == data
    p.write_bytes(data[::-1])
    assert sa.set_secret_from_file(blob, str(p)).kind == "file"
    assert base64.b64decode(sa.get(blob) or "") == data[::-1]
    listed = {x.name: x for x in sa.get_secrets()}
    assert listed[text].value is None and listed[blob].kind == "file"
    for r in (repr(got), repr(shown), repr(revealed), repr(listed[text]), str(shown)):
        assert CANARY not in r and "Fk3" not in r
    assert "<hidden>" in repr(shown)
    shown.delete()  # through the object, as the SDK's Secret.delete()
    assert sa.get_secret(text) is None and sa.get(text) is None
    sa.delete_secret(blob)
    assert blob not in [x.name for x in sa.get_secrets()]


def test_project_secrets(conn: envlet.Connection) -> None:
    proj = uniq("p")
    conn.get_projects_api().create_project(proj)
    sa = conn.get_secrets_api()
    sa.create_secret("shared", CANARY, project=proj)
    assert sa.get("shared", project=proj) == CANARY
    assert sa.get("shared") is None  # not a private one
    assert [x.project for x in sa.get_secrets(project=proj)] == [proj]
    sa.set_secret("shared", "v2", project=proj)
    got = sa.get_secret("shared", project=proj)
    assert got is not None and got.project == proj
    got.delete()
    assert sa.get_secrets(project=proj) == []


def test_secret_errors(conn: envlet.Connection, tmp_path: Path) -> None:
    sa = conn.get_secrets_api()
    name = uniq("dup")
    sa.create_secret(name, "x")
    assert code_of(sa.create_secret, name, CANARY).code == "ENV_VAR_ALREADY_EXISTS"
    assert code_of(sa.create_secret, "bad name", CANARY).code == "ENV_VAR_INVALID_NAME"
    assert code_of(sa.create_secret, uniq("nul"), CANARY + "\x00").code == "ENV_VAR_INVALID_VALUE"
    e = code_of(sa.create_secret, uniq("big"), CANARY * 300)
    assert (e.code, e.status) == ("SECRET_TOO_LARGE", 400)
    big = tmp_path / "big"
    big.write_bytes(b"\xff" * 6751)  # base64 of 9004 characters
    assert code_of(sa.create_secret_from_file, uniq("bigfile"), big).code == "SECRET_TOO_LARGE"
    assert code_of(sa.delete_secret, uniq("missing")).code == "ENV_VAR_NOT_FOUND"
    with pytest.raises(FileNotFoundError):
        sa.create_secret_from_file(uniq("nofile"), tmp_path / "absent")
    sa.delete_secret(name)


def test_projects_every_verb(conn: envlet.Connection) -> None:
    pa = conn.get_projects_api()
    proj, alice, bob = uniq("p"), str(free_uid()), str(free_uid())
    p = pa.create_project(proj)
    assert (p.name, p.owners, p.members, p.groups) == (proj, [], [], [])
    assert proj in [x.name for x in pa.get_projects()]
    assert pa.add_member(proj, alice, owner=True).owners == [alice]
    assert pa.add_member(proj, bob).members == [bob]
    got = pa.get_project(proj)
    assert got is not None and got.owners == [alice] and got.members == [bob]
    assert pa.remove_member(proj, bob).members == []
    assert pa.set_env_var(proj, "DATA_BUCKET", "s3://x").value == "s3://x"
    assert pa.set_env_var(proj, "API_TOKEN", CANARY).masked
    assert pa.set_env_var(proj, "FROM", from_secret="s").from_secret == "s"
    assert [v.name for v in pa.get_env_vars(proj)] == ["API_TOKEN", "DATA_BUCKET", "FROM"]
    tok = pa.get_env_var(proj, "API_TOKEN")
    assert tok is not None and tok.value == envlet.MASK and CANARY not in repr(tok)
    assert pa.get(proj, "API_TOKEN") == CANARY
    assert pa.get(proj, "MISSING") is None and pa.get_env_var(proj, "MISSING") is None
    pa.delete_env_var(proj, "FROM")
    g1, g2 = uniq("g"), uniq("g")
    ga = conn.get_variable_groups_api()
    ga.create_group(g1)
    ga.create_group(g2)
    assert pa.set_groups(proj, [g2, g1]).groups == [g2, g1]
    assert pa.set_groups(proj, []).groups == []
    pa.delete_project(proj)
    assert pa.get_project(proj) is None


def test_project_errors(conn: envlet.Connection) -> None:
    pa = conn.get_projects_api()
    proj = uniq("p")
    pa.create_project(proj)
    e = code_of(pa.create_project, proj)
    assert e.status == 409 and e.code in ("ALREADY_EXISTS", "PROJECT_ALREADY_EXISTS")
    assert code_of(pa.add_member, uniq("none"), "alice").code == "PROJECT_NOT_FOUND"
    assert code_of(pa.delete_project, uniq("none")).code == "PROJECT_NOT_FOUND"
    assert code_of(pa.remove_member, proj, "nobody").code == "NOT_FOUND"
    assert code_of(pa.delete_env_var, proj, "NOPE").code == "ENV_VAR_NOT_FOUND"
    assert code_of(pa.set_env_var, proj, "MATERIAL_DIRECTORY", CANARY).code == "ENV_VAR_RESERVED_NAME"
    assert code_of(pa.set_groups, proj, [uniq("none")]).code == "GROUP_NOT_FOUND"
    g = uniq("g")
    conn.get_variable_groups_api().create_group(g)
    assert code_of(pa.set_groups, proj, [g, g]).code == "INVALID_REQUEST"


def test_groups_every_verb(conn: envlet.Connection) -> None:
    ga, pa = conn.get_variable_groups_api(), conn.get_projects_api()
    g, proj = uniq("g"), uniq("p")
    pa.create_project(proj)
    assert (ga.create_group(g).name, ga.get_group(g).count) == (g, 0)  # type: ignore[union-attr]
    assert ga.set_env_var(g, "CUDA_VISIBLE_DEVICES", "0").value == "0"
    assert ga.set_env_var(g, "SHARED", CANARY, secret=True).masked
    grp = ga.get_group(g)
    assert grp is not None and grp.count == 2 and [v.name for v in grp.variables] == ["CUDA_VISIBLE_DEVICES", "SHARED"]
    assert grp.variables[1].value == envlet.MASK and CANARY not in repr(grp)
    shown = ga.get_group(g, reveal=True)
    assert shown is not None and shown.variables[1].value == CANARY and CANARY not in repr(shown)
    assert ga.assign(g, [proj]).projects == [proj]
    assert pa.get_project(proj).groups == [g]  # type: ignore[union-attr]
    assert g in [x.name for x in ga.get_groups()]
    assert ga.unassign(g, [proj]).projects == []
    ga.delete_env_var(g, "SHARED")
    assert ga.get_group(g).count == 1  # type: ignore[union-attr]
    ga.assign(g, [proj])
    ga.delete_group(g)
    assert ga.get_group(g) is None
    assert pa.get_project(proj).groups == []  # type: ignore[union-attr]


def test_group_errors(conn: envlet.Connection) -> None:
    ga = conn.get_variable_groups_api()
    g, proj = uniq("g"), uniq("p")
    ga.create_group(g)
    conn.get_projects_api().create_project(proj)
    assert code_of(ga.create_group, g).code == "GROUP_ALREADY_EXISTS"
    assert code_of(ga.set_env_var, uniq("none"), "X", CANARY).code == "GROUP_NOT_FOUND"
    assert code_of(ga.delete_env_var, g, "NOPE").code == "ENV_VAR_NOT_FOUND"
    assert code_of(ga.unassign, g, [proj]).code == "NOT_FOUND"
    assert code_of(ga.set_env_var, g, "API_KEY", CANARY).code == "ENV_VAR_RESERVED_NAME"


def test_agent_unavailable(tmp_path: Path) -> None:
    missing = str(tmp_path / "none.sock")
    e = code_of(envlet.Connection(missing).whoami)
    assert isinstance(e, envlet.AgentUnavailableError)
    assert (e.code, e.socket) == ("AGENT_UNAVAILABLE", missing) and missing in e.message
    assert "no such file" in e.message
    with pytest.raises(envlet.AgentUnavailableError, match="none.sock"):
        envlet.login(missing)
    # A socket file nobody listens on (an agent that died).
    dead = str(tmp_path / "dead.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(dead)
    s.close()
    e = code_of(envlet.Connection(dead).get_env_vars_api().get_env_vars)
    assert e.code == "AGENT_UNAVAILABLE" and dead in e.message and "refused" in e.message


def test_default_socket_from_environment(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVLET_ADMIN_SOCKET", agent.admin_socket)
    assert envlet.Connection().socket == agent.admin_socket
    monkeypatch.delenv("ENVLET_ADMIN_SOCKET")
    assert envlet.Connection().socket == "/run/envlet/admin.sock" == envlet.DEFAULT_ADMIN_SOCKET


@contextlib.contextmanager
def serve_canned(path: str, replies: List[bytes]) -> Iterator[None]:
    """A stand-in for a broken agent (a real one never sends these): answers
    each connection with the next canned bytes, then closes it."""
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(8)

    def loop() -> None:
        for reply in replies:
            c, _ = srv.accept()
            c.recv(65536)
            c.sendall(reply)
            c.close()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield None
    srv.close()


def test_bad_reply(tmp_path: Path) -> None:
    path = str(tmp_path / "bad.sock")
    replies = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nnope!",
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        b"garbage that is not HTTP\r\n\r\n",
    ]
    with serve_canned(path, replies):
        c = envlet.Connection(path)
        assert code_of(c.whoami).code == "BAD_REPLY"
        e = code_of(c.status)
        assert (e.code, e.status) == ("BAD_REPLY", 500)
        assert code_of(c.get_env_vars_api().get_env_vars).code == "BAD_REPLY"  # an object where a list belongs
        assert code_of(c.whoami).code == "AGENT_UNAVAILABLE"  # not HTTP at all: the connection is unusable


def test_too_many_connections(agent: Agent, run_as: Runner) -> None:
    """A uid holding its 32 connections gets the agent's TOO_MANY_CONNECTIONS."""
    r = run_as(free_uid(), f"""
        import socket
        held = []
        for _ in range(32):
            s = socket.socket(socket.AF_UNIX)
            s.connect({agent.admin_socket!r})
            held.append(s)
        envlet.get_env_vars_api().get_env_vars()
    """, check=False)
    assert r.error == "TOO_MANY_CONNECTIONS", r.out


def test_no_canary_in_agent_log(agent: Agent) -> None:
    assert CANARY not in agent.log_text()
    assert CANARY not in agent.audit_text()
