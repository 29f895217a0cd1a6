"""Every example of issue 13, verbatim, against a real agent of the test's own.

ISSUE_EXAMPLE is the issue's block as filed; the README carries the same
block between its python-example markers, and test_readme_block_is_the_issue
keeps the two equal, so the README's examples are the ones run here.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from typing import Any, Dict

import pytest

import envlet
from conftest import REPO, Agent

ISSUE_EXAMPLE = '''\
import envlet
envlet.login()                      # optional; a socket path may be given
api = envlet.get_env_vars_api()
api.create_env_var("OPENAI_API_KEY", "sk-...")  # error if it exists
api.set_env_var("HF_TOKEN", "hf_...")           # add or update (idempotent)
api.get("OPENAI_API_KEY")            # value, or None when missing
api.get_env_var("OPENAI_API_KEY")    # EnvVar object, or None when missing
for v in api.get_env_vars(): print(v.name)
api.update_env_var("OPENAI_API_KEY", "sk-new")  # error if missing
api.delete_env_var("OPENAI_API_KEY")  # RestAPIError, code ENV_VAR_NOT_FOUND, if missing
api.delete_all()

secrets_api = envlet.get_secrets_api()
secrets_api.create_secret("my_secret", "Fk3MoPlQXCQvPo")           # private
secrets_api.create_secret("db", "...", project="fraud")            # shared with a project
secrets_api.create_secret_from_file("my_ssh_key", "~/.ssh/id_ed25519")
raw = base64.b64decode(secrets_api.get("my_ssh_key"))              # reads return base64 for files
'''


def readme_block() -> str:
    text = (REPO / "README.md").read_text()
    m = re.search(r"<!-- python-example: begin[^>]*-->\n```python\n(.*?)```\n<!-- python-example: end -->", text, re.S)
    assert m, "README.md has no python-example block"
    return m.group(1)


def test_readme_block_is_the_issue() -> None:
    assert readme_block() == ISSUE_EXAMPLE


@pytest.fixture()
def example_env(own_agent: Agent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """What the examples assume: the admin socket in the environment, a
    project fraud, and a key file of every byte value under ~/.ssh."""
    monkeypatch.setenv("ENVLET_ADMIN_SOCKET", own_agent.admin_socket)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(envlet, "_default", None)
    envlet.Connection(own_agent.admin_socket).get_projects_api().create_project("fraud")
    key = bytes(range(256)) * 8 + os.urandom(512)
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_ed25519").write_bytes(key)
    return key


def test_issue_example_verbatim(example_env: bytes, own_agent: Agent, capsys: pytest.CaptureFixture[str]) -> None:
    ns: Dict[str, Any] = {"base64": base64}
    exec(compile(readme_block(), "README.md python-example", "exec"), ns)
    assert capsys.readouterr().out == "HF_TOKEN\nOPENAI_API_KEY\n"
    assert ns["raw"] == example_env
    conn = envlet.Connection(own_agent.admin_socket)
    assert conn.get_env_vars_api().get_env_vars() == []  # delete_all
    s = conn.get_secrets_api()
    assert [x.name for x in s.get_secrets()] == ["my_secret", "my_ssh_key"]
    assert [(x.name, x.kind) for x in s.get_secrets(project="fraud")] == [("db", "text")]
    assert s.get("my_secret") == "Fk3MoPlQXCQvPo"
    assert s.get("db", project="fraud") == "..."


def test_issue_example_step_by_step(example_env: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    """The same lines one at a time, each with what its comment promises."""
    import envlet

    assert envlet.login().socket == os.environ["ENVLET_ADMIN_SOCKET"]  # optional; a socket path may be given
    api = envlet.get_env_vars_api()
    created = api.create_env_var("OPENAI_API_KEY", "sk-...")  # error if it exists
    assert (created.name, created.masked, created.value) == ("OPENAI_API_KEY", True, "********")
    with pytest.raises(envlet.RestAPIError) as exists:
        api.create_env_var("OPENAI_API_KEY", "sk-...")
    assert (exists.value.code, exists.value.status) == ("ENV_VAR_ALREADY_EXISTS", 409)
    api.set_env_var("HF_TOKEN", "hf_...")  # add or update (idempotent)
    api.set_env_var("HF_TOKEN", "hf_...")
    assert api.get("HF_TOKEN") == "hf_..."
    assert api.get("OPENAI_API_KEY") == "sk-..."  # value, or None when missing
    assert api.get("MISSING") is None
    v = api.get_env_var("OPENAI_API_KEY")  # EnvVar object, or None when missing
    assert isinstance(v, envlet.EnvVar) and v.name == "OPENAI_API_KEY" and v.masked
    assert api.get_env_var("MISSING") is None
    for v in api.get_env_vars():
        print(v.name)
    assert capsys.readouterr().out == "HF_TOKEN\nOPENAI_API_KEY\n"
    api.update_env_var("OPENAI_API_KEY", "sk-new")  # error if missing
    assert api.get("OPENAI_API_KEY") == "sk-new"
    with pytest.raises(envlet.RestAPIError) as missing:
        api.update_env_var("MISSING", "x")
    assert missing.value.code == "ENV_VAR_NOT_FOUND"
    api.delete_env_var("OPENAI_API_KEY")  # RestAPIError, code ENV_VAR_NOT_FOUND, if missing
    with pytest.raises(envlet.RestAPIError) as gone:
        api.delete_env_var("OPENAI_API_KEY")
    assert (gone.value.code, gone.value.status) == ("ENV_VAR_NOT_FOUND", 404)
    assert api.delete_all() == 1
    assert api.get_env_vars() == []

    secrets_api = envlet.get_secrets_api()
    assert secrets_api.create_secret("my_secret", "Fk3MoPlQXCQvPo").project is None  # private
    assert secrets_api.create_secret("db", "...", project="fraud").project == "fraud"  # shared with a project
    f = secrets_api.create_secret_from_file("my_ssh_key", "~/.ssh/id_ed25519")
    assert (f.kind, f.size) == ("file", len(base64.b64encode(example_env)))
    raw = base64.b64decode(secrets_api.get("my_ssh_key"))  # reads return base64 for files
    assert raw == example_env
    assert secrets_api.get("missing") is None
