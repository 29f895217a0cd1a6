"""The package installs with no network (Debian's pip and setuptools, no
build isolation) and type-checks with mypy --strict for Python 3.9."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import CLIENT, HANG_GUARD, _unavailable


def test_pip_install_offline(tmp_path: Path) -> None:
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode != 0:
        _unavailable("pip is not installed (apt-get install python3-pip)")
    try:
        import setuptools  # noqa: F401
    except ImportError:
        _unavailable("setuptools is not installed (apt-get install python3-setuptools)")
    # Build from a copy: pip writes build/ and *.egg-info beside the sources.
    src = tmp_path / "src"
    shutil.copytree(CLIENT, src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info", ".*_cache"))
    target = tmp_path / "target"
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_CACHE_DIR="1")
    p = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--target", str(target), str(src)],
        env=env, capture_output=True, text=True, timeout=HANG_GUARD,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert (target / "envlet" / "py.typed").exists() and (target / "envlet" / "workload.py").exists()
    # Imported from the install, in a clean interpreter that does not see the checkout.
    p = subprocess.run(
        [sys.executable, "-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]); import envlet, envlet.workload; "
         "print(envlet.__file__); print(envlet.get_env_vars_api().user)", str(target)],
        capture_output=True, text=True, timeout=HANG_GUARD, cwd=tempfile.gettempdir(),
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [str(target / "envlet" / "__init__.py"), "me"]


def test_mypy_strict() -> None:
    mypy = shutil.which("mypy")
    if mypy is None:
        _unavailable("mypy is not installed (apt-get install mypy)")
    p = subprocess.run([mypy, "--strict", "--python-version", "3.9", "--no-incremental", "src/envlet"],
                       cwd=CLIENT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
