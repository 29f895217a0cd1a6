"""Roles, with the client run as real other uids (no passwd entry, os.setuid
in a child process): what each may do, and a refusal for each role that must
be refused — another user's account, a non-member, a member where an owner is
needed, a non-admin on projects and groups."""

from __future__ import annotations

import uuid

import pytest

import envlet
from conftest import Agent, Runner, free_uid

CANARY = "canary-" + uuid.uuid4().hex


def uniq(prefix: str) -> str:
    return prefix + "_" + uuid.uuid4().hex[:8]


@pytest.fixture()
def world(agent: Agent) -> dict:
    """A project with an owner and a member, a group assigned to it and one
    that is not, and an outsider: all uids with no passwd entry."""
    conn = envlet.Connection(agent.admin_socket)
    w = {
        "proj": uniq("p"),
        "owner": free_uid(),
        "member": free_uid(),
        "outsider": free_uid(),
        "group": uniq("g"),
        "other_group": uniq("g"),
    }
    pa, ga = conn.get_projects_api(), conn.get_variable_groups_api()
    pa.create_project(w["proj"])
    pa.add_member(w["proj"], str(w["owner"]), owner=True)
    pa.add_member(w["proj"], str(w["member"]))
    pa.set_env_var(w["proj"], "API_TOKEN", CANARY)
    pa.set_env_var(w["proj"], "REGION", "eu")
    for g in (w["group"], w["other_group"]):
        ga.create_group(g)
        ga.set_env_var(g, "GROUP_SECRET", CANARY, secret=True)
    ga.assign(w["group"], [w["proj"]])
    conn.get_secrets_api().create_secret("shared", CANARY, project=w["proj"])
    return w


def test_user_owns_their_account(run_as: Runner) -> None:
    uid = free_uid()
    r = run_as(uid, f"""
        me = envlet.login()
        assert me.whoami().admin is False
        api = envlet.get_env_vars_api()
        api.create_env_var("MY_KEY", {CANARY!r})
        v = api.get_env_var("MY_KEY")
        print(repr(v), v)
        s = envlet.get_secrets_api()
        s.create_secret("mine", {CANARY!r})
        print(repr(s.get_secret("mine", reveal=True)))
        return [envlet.whoami().user, api.get("MY_KEY"), v.value, s.get("mine")]
    """)
    assert r.value == [str(uid), CANARY, envlet.MASK, CANARY]
    printed = r.out.rsplit("\n", 2)[0]  # all but the JSON result line
    assert CANARY not in printed and "<hidden>" in printed


def test_refused_another_users_account(agent: Agent, run_as: Runner) -> None:
    victim, intruder = free_uid(), free_uid()
    conn = envlet.Connection(agent.admin_socket)
    conn.get_env_vars_api(str(victim)).set_env_var("THEIRS", CANARY)
    for call in (
        "envlet.get_env_vars_api(user=VICTIM).get_env_vars()",
        "envlet.get_env_vars_api(user=VICTIM).get('THEIRS')",
        "envlet.get_env_vars_api(user=VICTIM).set_env_var('X', 'y')",
        "envlet.get_env_vars_api(user=VICTIM).delete_all()",
        "envlet.get_secrets_api(user=VICTIM).get_secrets()",
        "envlet.get_secrets_api(user=VICTIM).create_secret('s', 'v')",
    ):
        r = run_as(intruder, f"VICTIM = {str(victim)!r}\nreturn {call}", check=False)
        assert r.error == "PERMISSION_DENIED", (call, r.out)
        assert CANARY not in r.out
    # Private secrets are written by their user only, not even by an admin.
    with pytest.raises(envlet.RestAPIError) as e:
        conn.get_secrets_api(str(victim)).create_secret("planted", "x")
    assert e.value.code == "PERMISSION_DENIED"


def test_refused_non_member(world: dict, run_as: Runner) -> None:
    for call in (
        "pa.get_project(P)",
        "pa.get_env_vars(P)",
        "pa.get(P, 'REGION')",
        "pa.set_env_var(P, 'X', 'y')",
        "envlet.get_secrets_api().get_secrets(project=P)",
        "envlet.get_secrets_api().get('shared', project=P)",
        "envlet.get_secrets_api().create_secret('s', 'v', project=P)",
        "envlet.get_variable_groups_api().get_group(G)",
        # A project that does not exist looks the same as one they may not see.
        "pa.get_project('no_such_project_' + P)",
    ):
        r = run_as(world["outsider"], f"P = {world['proj']!r}\nG = {world['group']!r}\npa = envlet.get_projects_api()\nreturn {call}", check=False)
        assert r.error == "PERMISSION_DENIED", (call, r.out)
        assert CANARY not in r.out
    r = run_as(world["outsider"], "return [p.name for p in envlet.get_projects_api().get_projects()]")
    assert world["proj"] not in r.value


def test_member_reads_but_owner_writes(world: dict, run_as: Runner) -> None:
    body = f"""
        P = {world['proj']!r}
        pa = envlet.get_projects_api()
        out = {{"names": [v.name for v in pa.get_env_vars(P)], "region": pa.get(P, "REGION")}}
        tok = pa.get_env_var(P, "API_TOKEN", reveal=True)
        out["token_masked"] = tok.masked
        print(repr(tok))
        for label, fn in (("set", lambda: pa.set_env_var(P, "NEW_VAR", "1")),
                          ("delete", lambda: pa.delete_env_var(P, "REGION")),
                          ("add_member", lambda: pa.add_member(P, "someone")),
                          ("get_token", lambda: pa.get(P, "API_TOKEN"))):
            try:
                fn()
                out[label] = "ok"
            except envlet.RestAPIError as e:
                out[label] = e.code
        s = envlet.get_secrets_api()
        out["shared"] = s.get("shared", project=P) == {CANARY!r}
        s.set_secret("from_" + str(envlet.whoami().uid), "v", project=P)
        return out
    """
    member = run_as(world["member"], body)
    assert member.value["names"] == ["API_TOKEN", "REGION"] and member.value["region"] == "eu"
    # A member may not change the project, nor see a masked project value in clear.
    assert member.value["set"] == member.value["delete"] == member.value["add_member"] == "PERMISSION_DENIED"
    assert member.value["token_masked"] is True and member.value["get_token"] == "PERMISSION_DENIED"
    assert member.value["shared"] is True  # project secrets are for members too
    assert CANARY not in member.out
    owner = run_as(world["owner"], body)
    assert owner.value["set"] == "ok" and owner.value["delete"] == "ok"
    assert owner.value["token_masked"] is False and owner.value["get_token"] == "ok"
    assert CANARY not in owner.out


def test_refused_non_admin_on_projects_and_groups(world: dict, run_as: Runner) -> None:
    calls = (
        "envlet.get_projects_api().create_project('x_' + P)",
        "envlet.get_projects_api().delete_project(P)",
        "envlet.get_projects_api().set_groups(P, [G])",
        "ga.create_group('x_' + G)",
        "ga.set_env_var(G, 'X', 'y')",
        "ga.delete_env_var(G, 'GROUP_SECRET')",
        "ga.assign(OTHER, [P])",
        "ga.unassign(G, [P])",
        "ga.delete_group(G)",
        "ga.get_group(OTHER)",
    )
    for uid in (world["owner"], world["member"]):
        for call in calls:
            src = f"P = {world['proj']!r}\nG = {world['group']!r}\nOTHER = {world['other_group']!r}\nga = envlet.get_variable_groups_api()\nreturn {call}"
            r = run_as(uid, src, check=False)
            assert r.error == "PERMISSION_DENIED", (uid, call, r.out)


def test_member_reads_assigned_group_masked(world: dict, run_as: Runner) -> None:
    r = run_as(world["member"], f"""
        ga = envlet.get_variable_groups_api()
        g = ga.get_group({world['group']!r}, reveal=True)
        print(repr(g))
        return [[x.name for x in ga.get_groups()], [(v.name, v.value, v.masked) for v in g.variables]]
    """)
    assert r.value == [[world["group"]], [["GROUP_SECRET", envlet.MASK, True]]]
    assert CANARY not in r.out
