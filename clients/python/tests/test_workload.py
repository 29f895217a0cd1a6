"""envlet.workload against a real agent: secrets byte for byte, the whole
environment (the same as envlet-exec gives), identity by uid and by token,
and every error the workload side can raise."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

import envlet
import envlet.workload
from conftest import HANG_GUARD, Agent, Runner, free_uid

CANARY = "canary-" + uuid.uuid4().hex
# A file secret of every byte value, NUL included (at most 6750 bytes: 9000 base64 characters).
BLOB = bytes(range(256)) * 20 + b"\x00\xff" + os.urandom(200)


def uniq(prefix: str) -> str:
    return prefix + "_" + uuid.uuid4().hex[:8]


def register(conn: envlet.Connection, reg: Dict[str, Any]) -> Dict[str, Any]:
    # The Python client has no workloads API; the test registers through its transport.
    doc: Dict[str, Any] = conn._t.request("POST", "/v1/workloads", reg)
    return doc


@pytest.fixture()
def job(agent: Agent, run_as: Runner, home: Path) -> Dict[str, Any]:
    """A workload run by a fresh uid in a project, with a value in every layer it can see."""
    conn = envlet.Connection(agent.admin_socket)
    uid, proj = free_uid(), uniq("p")
    pa = conn.get_projects_api()
    pa.create_project(proj)
    pa.add_member(proj, str(uid))
    pa.set_env_var(proj, "DATA_BUCKET", "s3://fraud")
    pa.set_env_var(proj, "LOG_LEVEL", "info")
    conn.get_secrets_api().create_secret("shared", CANARY + "-shared", project=proj)
    (home / "blob.bin").write_bytes(BLOB)
    run_as(uid, f"""
        envlet.get_env_vars_api().set_env_var("LOG_LEVEL", "debug")
        envlet.get_env_vars_api().set_env_var("HF_TOKEN", {CANARY!r})
        s = envlet.get_secrets_api()
        s.create_secret("priv", {CANARY!r} + "-priv")
        s.create_secret("latin", "caf\\u00e9 \\u2603")
        s.create_secret_from_file("blob", "~/blob.bin")
    """)
    wid = uniq("train")
    register(conn, {"id": wid, "user": str(uid), "project": proj, "match": {"uid": uid},
                    "runtime": {"LR": "0.1", "WANDB_MODE": ""}, "execution": {"SEED": "7"}})
    return {"uid": uid, "proj": proj, "id": wid}


def test_get_secret_as_the_workload(job: Dict[str, Any], run_as: Runner) -> None:
    r = run_as(job["uid"], """
        import base64
        w = envlet.workload
        return [w.get_secret("priv"), w.get_secret("shared"), w.get_secret("latin"),
                base64.b64encode(w.get_secret_bytes("blob")).decode()]
    """)
    priv, shared, latin, blob = r.value
    assert (priv, shared, latin) == (CANARY + "-priv", CANARY + "-shared", "caf\u00e9 \u2603")
    assert base64.b64decode(blob) == BLOB  # byte for byte


def test_secret_bytes_same_as_launcher(job: Dict[str, Any], run_as: Runner, bins: Dict[str, Path], agent: Agent) -> None:
    """envlet-exec --get-secret and the client give the same bytes."""
    def drop() -> None:
        os.setgroups([])
        os.setgid(job["uid"])
        os.setuid(job["uid"])

    for name in ("blob", "priv"):
        p = subprocess.run([str(bins["envlet-exec"]), "--get-secret", name], env={"ENVLET_SOCKET": agent.workload_socket},
                           preexec_fn=drop, capture_output=True, timeout=HANG_GUARD)
        assert p.returncode == 0, p.stderr
        r = run_as(job["uid"], f"import base64\nreturn base64.b64encode(envlet.workload.get_secret_bytes({name!r})).decode()")
        assert base64.b64decode(r.value) == p.stdout


def test_get_env_same_as_launcher(job: Dict[str, Any], run_as: Runner, bins: Dict[str, Path], agent: Agent) -> None:
    base = {"PATH": "/usr/bin:/bin", "WANDB_MODE": "from-image", "KEEP": "1", "LOG_LEVEL": "image"}
    env = dict(base, ENVLET_SOCKET=agent.workload_socket)

    def drop() -> None:
        os.setgroups([])
        os.setgid(job["uid"])
        os.setuid(job["uid"])

    p = subprocess.run([str(bins["envlet-exec"]), "--", "/usr/bin/env", "-0"], env=env, preexec_fn=drop,
                       capture_output=True, timeout=HANG_GUARD)
    assert p.returncode == 0, p.stderr
    launcher = dict(kv.split("=", 1) for kv in p.stdout.decode().split("\0") if kv)
    r = run_as(job["uid"], f"return envlet.workload.get_env({base!r})")
    assert r.value == launcher
    got = r.value
    assert got["LOG_LEVEL"] == "debug" and got["DATA_BUCKET"] == "s3://fraud" and got["SEED"] == "7"
    assert got["KEEP"] == "1" and got["HF_TOKEN"] == CANARY
    assert "WANDB_MODE" not in got  # an empty runtime value clears the image's
    assert not any(k.startswith("ENVLET_") for k in got)


def test_load_env(job: Dict[str, Any], run_as: Runner) -> None:
    r = run_as(job["uid"], """
        import os
        os.environ["WANDB_MODE"] = "from-image"
        rev = envlet.workload.load_env()
        return [rev, os.environ.get("LR"), os.environ.get("LOG_LEVEL"), "WANDB_MODE" in os.environ,
                "ENVLET_SOCKET" in os.environ, envlet.workload.get_secret("priv") != ""]
    """)
    rev, lr, level, wandb, sock, again = r.value
    assert isinstance(rev, int) and rev > 0
    assert (lr, level, wandb, sock, again) == ("0.1", "debug", False, True, True)


def test_token_identity(agent: Agent, run_as: Runner, home: Path) -> None:
    conn = envlet.Connection(agent.admin_socket)
    user = free_uid()
    run_as(user, f"envlet.get_secrets_api().create_secret('tok_secret', {CANARY!r})")
    wid, proj = uniq("svc"), uniq("p")
    conn.get_projects_api().create_project(proj)
    conn.get_projects_api().add_member(proj, str(user))
    reply = register(conn, {"id": wid, "user": str(user), "project": proj, "match": {"token": True}})
    token_file = reply["token_file"]
    # Root matches no registration by uid: only the token says who it is.
    r = run_as(0, "return envlet.workload.get_secret('tok_secret')", check=False)
    assert r.error == "WORKLOAD_UNKNOWN", r.out
    r = run_as(0, "return envlet.workload.get_secret('tok_secret')", env={"ENVLET_TOKEN_FILE": token_file})
    assert r.value == CANARY
    r = run_as(0, f"return envlet.workload.get_secret('tok_secret', token_file={token_file!r})")
    assert r.value == CANARY
    # A token with a trailing newline is the same token, as for the launcher.
    with_newline = home / "tok"
    with_newline.write_bytes(Path(token_file).read_bytes().strip() + b"\n")
    r = run_as(0, "return envlet.workload.get_secret('tok_secret')", env={"ENVLET_TOKEN_FILE": str(with_newline)})
    assert r.value == CANARY
    # A wrong token is no token.
    wrong = home / "wrong"
    wrong.write_text("0" * 64)
    r = run_as(0, "return envlet.workload.get_env()", env={"ENVLET_TOKEN_FILE": str(wrong)}, check=False)
    assert r.error in ("WORKLOAD_UNKNOWN", "PERMISSION_DENIED"), r.out


def test_workload_errors(job: Dict[str, Any], run_as: Runner, home: Path, agent: Agent) -> None:
    r = run_as(free_uid(), "return envlet.workload.get_secret('priv')", check=False)
    assert r.error == "WORKLOAD_UNKNOWN" and "agent refused" in r.message
    r = run_as(job["uid"], "return envlet.workload.get_secret('nope')", check=False)
    assert r.error == "ENV_VAR_NOT_FOUND"
    r = run_as(job["uid"], "return envlet.workload.get_secret('blob')", check=False)
    assert r.error == "INVALID_REQUEST" and "get_secret_bytes" in r.message  # not UTF-8 text
    for bad in ("A=B", "", "x" * 257, "NUL\x00"):
        r = run_as(job["uid"], f"return envlet.workload.get_secret({bad!r})", check=False)
        assert r.error == "INVALID_REQUEST", bad
    missing = str(home / "none.sock")
    r = run_as(job["uid"], "return envlet.workload.get_env()", env={"ENVLET_SOCKET": missing, "ENVLET_RETRY": "0"}, check=False)
    assert r.error == "AGENT_UNREACHABLE" and missing in r.message and r.value is None
    r = run_as(job["uid"], f"return envlet.workload.get_env(socket={missing!r})", check=False)
    assert r.error == "AGENT_UNREACHABLE"
    r = run_as(job["uid"], "return envlet.workload.get_env()", env={"ENVLET_TOKEN_FILE": str(home / "absent")}, check=False)
    assert r.error == "TOKEN_FILE" and "absent" in r.message
    long_token = home / "long"
    long_token.write_text("a" * 1025)
    r = run_as(job["uid"], "return envlet.workload.get_env()", env={"ENVLET_TOKEN_FILE": str(long_token)}, check=False)
    assert r.error == "TOKEN_FILE" and "longer than 1024" in r.message
    r = run_as(job["uid"], "return envlet.workload.get_env()", env={"ENVLET_TIMEOUT": "soon"}, check=False)
    assert r.error == "INVALID_REQUEST" and "ENVLET_TIMEOUT" in r.message
    assert CANARY not in "".join(run_as.transcript)


def frame(t: int, payload: bytes) -> bytes:
    return b"ENVL" + bytes([1, t, 0, 0]) + struct.pack(">I", len(payload)) + payload


@contextlib.contextmanager
def canned_agent(path: str, replies: List[bytes]) -> Iterator[None]:
    """A stand-in for a broken agent (a real one never sends these frames)."""
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(8)

    def loop() -> None:
        for reply in replies:
            c, _ = srv.accept()
            c.recv(65536)
            c.sendall(reply)
            c.close()

    threading.Thread(target=loop, daemon=True).start()
    try:
        yield None
    finally:
        srv.close()


def test_bad_replies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "w.sock")
    monkeypatch.setenv("ENVLET_RETRY", "0")
    env_frame = frame(0x81, struct.pack(">QI", 3, 2) + b"\x00" + struct.pack(">H", 1) + b"A" + struct.pack(">I", 1) + b"1"
                      + b"\x01" + struct.pack(">H", 1) + b"B" + struct.pack(">I", 0))
    replies = [
        b"HTTP/1.1 400 Bad Request\r\n\r\n",  # not an envlet workload socket
        frame(0x81, b"\x00" * 12),  # an Env frame where a Secret belongs
        frame(0x82, struct.pack(">I", 10) + b"short"),  # truncated value
        frame(0x81, struct.pack(">QI", 1, 1) + b"\x02" + struct.pack(">H", 1) + b"A" + struct.pack(">I", 0)),  # unknown flag
        b"ENVL\x01\x82\x00\x00" + struct.pack(">I", (1 << 20) + 5),  # larger than a Secret may be
        frame(0x82, struct.pack(">I", 3) + b"abc") + b"",  # a good one, to show the stand-in works
        env_frame,
        frame(0xFF, struct.pack(">H", 4) + b"BUSY" + struct.pack(">H", 3) + b"try"),  # busy, retry off: reported
        b"",  # closed without a reply
    ]
    with canned_agent(path, replies):
        w = envlet.workload
        for call in (lambda: w.get_secret("x", socket=path), lambda: w.get_secret("x", socket=path),
                     lambda: w.get_secret("x", socket=path), lambda: w.get_env({}, socket=path),
                     lambda: w.get_secret("x", socket=path)):
            with pytest.raises(envlet.RestAPIError) as e:
                call()
            assert e.value.code == "BAD_REPLY", e.value
        assert w.get_secret("x", socket=path) == "abc"
        assert w.get_env({"B": "gone", "C": "kept", "ENVLET_SOCKET": path}, socket=path) == {"A": "1", "C": "kept"}
        with pytest.raises(envlet.RestAPIError) as e:
            w.get_secret("x", socket=path)
        assert (e.value.code, e.value.message) == ("BUSY", "agent refused: try")
        with pytest.raises(envlet.RestAPIError) as e:
            w.get_secret("x", socket=path)
        assert e.value.code == "BAD_REPLY" and "without a reply" in e.value.message


def test_busy_agent_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "w.sock")
    monkeypatch.setenv("ENVLET_RETRY", "60")
    busy = frame(0xFF, struct.pack(">H", 20) + b"TOO_MANY_CONNECTIONS" + struct.pack(">H", 4) + b"full")
    with canned_agent(path, [busy, busy, frame(0x82, struct.pack(">I", 2) + b"ok")]):
        assert envlet.workload.get_secret("x", socket=path) == "ok"


def test_ambiguous_workload(agent: Agent, run_as: Runner) -> None:
    conn = envlet.Connection(agent.admin_socket)
    uid, proj = free_uid(), uniq("p")
    conn.get_projects_api().create_project(proj)
    for _ in range(2):
        register(conn, {"id": uniq("twin"), "user": str(uid), "project": proj, "match": {"uid": uid}})
    r = run_as(uid, "return envlet.workload.get_env()", check=False)
    assert r.error == "WORKLOAD_AMBIGUOUS", r.out


def test_silent_agent_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent that accepts and never answers: ENVLET_TIMEOUT bounds the wait
    (the admin side: Connection(timeout=)). The stand-in holds the connection
    open until the client gives up."""
    path = str(tmp_path / "silent.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(8)
    monkeypatch.setenv("ENVLET_TIMEOUT", "0.2")
    try:
        with pytest.raises(envlet.AgentUnavailableError) as e:
            envlet.workload.get_secret("x", socket=path)
        assert e.value.code == "AGENT_UNREACHABLE" and "timed out after 0.2s (ENVLET_TIMEOUT)" in e.value.message
        with pytest.raises(envlet.AgentUnavailableError) as e:
            envlet.Connection(path, timeout=0.2).whoami()
        assert e.value.code == "AGENT_UNAVAILABLE" and path in e.value.message and "timed out" in e.value.message
    finally:
        srv.close()
