"""Trust levels: the policy, the pool a job goes to, and the config that feeds them."""

from __future__ import annotations

import pytest

from raibid.agents.trust import TrustPolicy, pool_name, route, secret_allowed, split_pool
from raibid.config.loader import load_config
from raibid.errors import ConfigError


def test_empty_policy_trusts_nothing():
    assert not TrustPolicy().is_trusted("me/app")
    assert route("rust", "me/app", TrustPolicy()) == "rust-untrusted"


def test_owner_is_case_insensitive_and_regex_matches_in_full():
    p = TrustPolicy.of(owners=["Me"], repos=[r"team/api-.*"])
    assert p.is_trusted("me/anything") and p.is_trusted("ME/x")
    assert p.is_trusted("team/api-gw")
    assert not p.is_trusted("team/api-gw\n") and not p.is_trusted("xteam/api-gw")
    assert not p.is_trusted("team/web") and not p.is_trusted("mirrors/me")


def test_route_ignores_a_requested_untrusted_suffix_and_decides_itself():
    p = TrustPolicy.of(owners=["me"])
    assert route("rust-untrusted", "me/app", p) == "rust"
    assert route("rust", "mirrors/app", p) == "rust-untrusted"


def test_trusted_pool_admits_only_trusted_repos():
    p = TrustPolicy.of(owners=["me"])
    assert p.admits("me/app", "rust") and not p.admits("mirrors/app", "rust")
    assert p.admits("mirrors/app", "rust-untrusted")


def test_pool_names_round_trip():
    for t in ("generic", "rust", "my-type"):
        for trusted in (True, False):
            assert split_pool(pool_name(t, trusted)) == (t, trusted)


def test_secret_patterns_match_in_full():
    assert secret_allowed([r"me/.*"], "me/app") and not secret_allowed([r"me/app"], "me/app2")


def _write(tmp_path, text):
    p = tmp_path / "raibid.yaml"
    p.write_text(text)
    return p


def test_config_reads_trusted_and_secrets(tmp_path):
    cfg = load_config(_write(tmp_path, "agents:\n  trusted:\n    owners: [me]\n    repos: ['team/.*']\n"
                                       "  secrets:\n    - {name: CARGO_TOKEN, secret: crates, repos: ['me/.*']}\n"),
                      env={})
    assert cfg.agents.trusted.owners == ["me"] and cfg.agents.secrets[0].key == "CARGO_TOKEN"


@pytest.mark.parametrize("text, needle", [
    ("agents:\n  trusted:\n    repos: ['(']\n", "agents.trusted.repos[0]"),
    ("agents:\n  secrets:\n    - {name: X, secret: s}\n", "'repos'"),
    ("agents:\n  secrets:\n    - {name: 'a-b', secret: s, repos: ['.*']}\n", "env var name"),
    ("agents:\n  types:\n    rust-untrusted: {extends: rust}\n", "untrusted builds"),
    ("agents:\n  secrets:\n    - {name: A, secret: 'Bad Name!', repos: ['.*']}\n", "not a Kubernetes object name"),
    ("agents:\n  secrets:\n    - {name: A, secret: s, key: '../x', repos: ['.*']}\n", "not a Secret key"),
    ("agents:\n  secrets:\n    - {name: A, secret: s, repos: ['.*']}\n    - {name: A, secret: t, repos: ['.*']}\n",
     "named twice"),
    ("agents:\n  workspace_size: lots\n", "agents.workspace_size"),
])
def test_bad_trust_config_names_the_entry(tmp_path, text, needle):
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, text), env={})
    assert needle in e.value.message


def test_env_overrides_meet_the_same_checks_as_the_file():
    with pytest.raises(ConfigError) as e:
        load_config(None, env={"RAIBID_AGENTS_TRUSTED_REPOS": "['(']"})
    assert "agents.trusted.repos[0]" in e.value.message
    with pytest.raises(ConfigError) as e:
        load_config(None, env={"RAIBID_AGENTS_SECRETS": "[{name: A, secret: s}]"})
    assert "'repos'" in e.value.message


def test_a_type_name_leaves_room_for_its_untrusted_pool(tmp_path):
    name = "t" * 54
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, f"agents:\n  types:\n    {name}: {{extends: generic}}\n"), env={})
    assert "longer than 53" in e.value.message
    load_config(_write(tmp_path, f"agents:\n  types:\n    {name[:53]}: {{extends: generic}}\n"), env={})


def test_trusted_regexes_and_secret_patterns_ignore_case_as_gitea_names_do():
    p = TrustPolicy.of(repos=[r"acme/app-.*"])
    assert p.is_trusted("ACME/App-1") and p.is_trusted("acme/app-1")
    assert secret_allowed([r"acme/.*"], "ACME/x")  # a repo trusted as ACME/x is not refused its secret
