"""Fixtures: the real binaries, a real `envletd -dev`, and callers as other uids.

The binaries come from $ENVLET_BIN (a directory holding envletd, envlet and
envlet-exec, as `make build` leaves them in bin/), else they are built with
`go build` into a temporary directory. Without Go or without root the
tests skip with the reason, except when CI=true, where that is a failure.
"""

from __future__ import annotations

import json
import os
import pwd
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

CLIENT = Path(__file__).resolve().parent.parent  # clients/python
REPO = CLIENT.parent.parent
# The tests run the client from the checkout (test_install.py checks an installed copy).
sys.path.insert(0, str(CLIENT / "src"))
# A guard against a hang, not a timing assertion: generous for a loaded machine.
HANG_GUARD = 120


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(reason + " (CI=true: a missing tool is a failure)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    """A short temporary directory every test uid can traverse (socket paths stay under 108 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="elpy"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def bins(workdir: Path) -> Dict[str, Path]:
    """Paths of envletd, envlet and envlet-exec."""
    given = os.environ.get("ENVLET_BIN")
    if given:
        b = Path(given).resolve()
        return {n: b / n for n in ("envletd", "envlet", "envlet-exec")}
    go = shutil.which("go") or ("/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None)
    if go is None:
        _unavailable("no go toolchain to build envletd (set ENVLET_BIN to a directory of built binaries)")
    out = workdir / "bin"
    out.mkdir()
    out.chmod(0o755)
    env = dict(os.environ)
    subprocess.run([go, "build", "-trimpath", "-o", str(out) + "/", "./cmd/envletd", "./cmd/envlet"], cwd=REPO, check=True, env=env)
    env["CGO_ENABLED"] = "0"
    subprocess.run([go, "build", "-trimpath", "-o", str(out / "envlet-exec"), "./cmd/envlet-exec"], cwd=REPO, check=True, env=env)
    return {n: out / n for n in ("envletd", "envlet", "envlet-exec")}


@pytest.fixture(scope="session")
def pkgdir(workdir: Path) -> Path:
    """A copy of the client's source that any uid can import (the checkout may sit under a 0700 home)."""
    if os.getuid() != 0:
        _unavailable("these tests run the client as other uids and need root")
    dst = workdir / "py"
    shutil.copytree(CLIENT / "src", dst, ignore=shutil.ignore_patterns("__pycache__"))
    for root, dirs, files in os.walk(dst):
        os.chmod(root, 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)
    return dst


@dataclass
class Agent:
    """A running `envletd -dev`, started as root (so root is its admin)."""

    dir: Path
    admin_socket: str
    workload_socket: str
    proc: "subprocess.Popen[bytes]"
    log: List[bytes] = field(default_factory=list)

    def log_text(self) -> str:
        return b"".join(self.log).decode("utf-8", "replace")

    def audit_text(self) -> str:
        p = self.dir / "d" / "audit.log"
        return p.read_text("utf-8", "replace") if p.exists() else ""


def start_agent(bins: Dict[str, Path], parent: Path) -> Agent:
    d = Path(tempfile.mkdtemp(prefix="a", dir=parent))
    d.chmod(0o755)
    proc = subprocess.Popen(
        [str(bins["envletd"]), "-dev", "-dir", str(d / "d")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(d)},
    )
    agent = Agent(d, "", "", proc)
    assert proc.stderr is not None and proc.stdout is not None
    stderr = proc.stderr

    def drain() -> None:
        for chunk in iter(lambda: stderr.read1(65536), b""):
            agent.log.append(chunk)

    threading.Thread(target=drain, daemon=True).start()
    # The agent prints its two export lines once its sockets are open: wait
    # for them (an event), not for a while.
    exports: Dict[str, str] = {}
    while len(exports) < 2:
        line = proc.stdout.readline()
        if not line:
            proc.wait(HANG_GUARD)
            raise RuntimeError("envletd -dev exited before it served; log:\n" + agent.log_text())
        text = line.decode().strip()
        if text.startswith("export "):
            text = text[len("export ") :]
        k, _, v = text.partition("=")
        exports[k] = shlex.split(v)[0]
    agent.admin_socket = exports["ENVLET_ADMIN_SOCKET"]
    agent.workload_socket = exports["ENVLET_SOCKET"]
    return agent


def stop_agent(agent: Agent) -> None:
    if agent.proc.poll() is None:
        agent.proc.send_signal(signal.SIGTERM)
        agent.proc.wait(HANG_GUARD)
    shutil.rmtree(agent.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def agent(bins: Dict[str, Path], workdir: Path, pkgdir: Path) -> Iterator[Agent]:
    """One agent for a test module; tests keep apart by fresh uids and unique names."""
    a = start_agent(bins, workdir)
    yield a
    stop_agent(a)


@pytest.fixture()
def own_agent(bins: Dict[str, Path], workdir: Path, pkgdir: Path) -> Iterator[Agent]:
    """An agent of the test's own, for tests that need an empty store."""
    a = start_agent(bins, workdir)
    yield a
    stop_agent(a)


_used_uids: set = set()


def free_uid() -> int:
    """A uid no passwd entry names, not handed out before in this run."""
    while True:
        uid = random.randint(200000, 2000000000)
        if uid in _used_uids:
            continue
        try:
            pwd.getpwuid(uid)
        except KeyError:
            _used_uids.add(uid)
            return uid


@dataclass
class Result:
    """What a client run as another uid did: its value or its error, and its whole output."""

    value: Any
    error: Optional[str]
    message: str
    out: str


_WRAPPER = """
import json, sys, traceback
import envlet
def main():
{body}
try:
    v = main()
    print(json.dumps({{"value": v}}))
except envlet.RestAPIError as e:
    print(json.dumps({{"error": e.code, "message": e.message, "repr": repr(e), "type": type(e).__name__,
                      "socket": getattr(e, "socket", None)}}))
"""


@dataclass
class Runner:
    """Runs client code as a uid in a child process (os.setuid in preexec)."""

    agent: Agent
    pkgdir: Path
    home: Path
    transcript: List[str] = field(default_factory=list)

    def __call__(self, uid: int, body: str, env: Optional[Dict[str, str]] = None, check: bool = True) -> Result:
        src = _WRAPPER.format(body=textwrap.indent(textwrap.dedent(body).strip("\n"), "    "))
        full_env = {
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(self.pkgdir),
            "HOME": str(self.home),
            "ENVLET_ADMIN_SOCKET": self.agent.admin_socket,
            "ENVLET_SOCKET": self.agent.workload_socket,
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        full_env.update(env or {})

        def drop() -> None:
            if uid != 0:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)

        p = subprocess.run(
            [sys.executable, "-c", src], env=full_env, preexec_fn=drop, capture_output=True, timeout=HANG_GUARD, cwd="/"
        )
        out = p.stdout.decode("utf-8", "replace") + p.stderr.decode("utf-8", "replace")
        self.transcript.append(out)
        lines = p.stdout.decode().strip().splitlines()
        if p.returncode != 0 or not lines:
            raise AssertionError(f"client as uid {uid} failed (exit {p.returncode}):\n{out}")
        doc = json.loads(lines[-1])
        r = Result(doc.get("value"), doc.get("error"), doc.get("message", ""), out)
        if check and r.error is not None:
            raise AssertionError(f"client as uid {uid}: {r.error}: {r.message}")
        return r


@pytest.fixture()
def home(workdir: Path) -> Iterator[Path]:
    """A directory of the test's own that every uid may read and write ($HOME of run_as)."""
    d = Path(tempfile.mkdtemp(prefix="h", dir=workdir))
    d.chmod(0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture()
def run_as(agent: Agent, pkgdir: Path, home: Path) -> Runner:
    """run_as(uid, body): the body of a function, run as uid with the agent's sockets in the environment."""
    return Runner(agent, pkgdir, home)
