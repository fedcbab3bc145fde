"""Config loading: defaults, search order, deep merge, env overrides, errors with file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raibid.config import commented_default_yaml, load_config
from raibid.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_are_complete_without_any_file():
    cfg = load_config()
    assert cfg.source is None
    assert cfg.cluster.namespace == "raibid-ci"
    assert cfg.cluster.components == ["redis", "gitea", "keda", "flux", "agents"]
    assert cfg.redis.url == "redis://127.0.0.1:6379/0" and cfg.redis.prefix == "raibid"
    assert cfg.gitea.admin_user == "raibid-admin"
    assert cfg.agents.max_replicas == 8 and cfg.agents.types == {}
    assert cfg.mirror.trigger.branches == "^(main|master)$" and cfg.mirror.jobs == 4


def test_search_order_explicit_then_cwd_then_xdg(isolated_env, monkeypatch):
    xdg = write(Path.home() / ".config" / "raibid" / "config.yaml", "redis: {prefix: from-xdg}\n")
    assert load_config().source == xdg
    cwd = write(isolated_env / "raibid.yaml", "redis: {prefix: from-cwd}\n")
    assert load_config().redis.prefix == "from-cwd" and load_config().source == cwd
    explicit = write(isolated_env / "other.yaml", "redis: {prefix: explicit}\n")
    assert load_config(explicit).redis.prefix == "explicit"


def test_deep_merge_keeps_sibling_defaults(isolated_env):
    p = write(isolated_env / "raibid.yaml", "mirror:\n  trigger:\n    agent: rust\n")
    cfg = load_config(p)
    assert cfg.mirror.trigger.agent == "rust"
    assert cfg.mirror.trigger.enabled is True and cfg.mirror.target_org == "mirrors"


def test_env_overrides_values_and_ignores_non_keys():
    env = {"RAIBID_REDIS_URL": "redis://h:1/2", "RAIBID_AGENTS_MAX_REPLICAS": "3",
           "RAIBID_MIRROR_TRIGGER_ENABLED": "false", "RAIBID_GITEA_TOKEN": "tok-SECRET-1",
           "RAIBID_REDIS_PASSWORD": "pw-SECRET-2", "RAIBID_DEBUG": "1", "RAIBID_CONFIG": "x"}
    cfg = load_config(None, env=env)
    assert cfg.redis.url == "redis://h:1/2"
    assert cfg.agents.max_replicas == 3
    assert cfg.mirror.trigger.enabled is False
    assert "SECRET" not in json.dumps(cfg.to_dict())


def test_env_override_with_wrong_type_names_the_variable():
    with pytest.raises(ConfigError) as e:
        load_config(None, env={"RAIBID_AGENTS_MAX_REPLICAS": "many"})
    assert "RAIBID_AGENTS_MAX_REPLICAS" in e.value.message and "integer" in e.value.message


def test_unknown_key_names_key_file_and_line(isolated_env):
    p = write(isolated_env / "raibid.yaml", "redis:\n  url: redis://x\n  pasword: oops\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.message == f"{p}:3: unknown key 'redis.pasword'"
    assert "password_env" in (e.value.hint or "")


def test_unknown_section_and_nested_agent_type_key(isolated_env):
    p = write(isolated_env / "raibid.yaml", "agents:\n  types:\n    rust:\n      image: x\n      gpus: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.message == f"{p}:5: unknown key 'agents.types.rust.gpus'"
    p2 = write(isolated_env / "b.yaml", "\n\nfoo: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(p2)
    assert e.value.message == f"{p2}:3: unknown key 'foo'"


def test_wrong_type_names_file_and_line(isolated_env):
    p = write(isolated_env / "raibid.yaml", "agents:\n  max_replicas: lots\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.message == f"{p}:2: 'agents.max_replicas' must be an integer, got a string"
    p = write(isolated_env / "raibid.yaml", "cluster:\n  components: redis\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "'cluster.components' must be a list" in e.value.message


def test_broken_yaml_names_file_and_line(isolated_env):
    p = write(isolated_env / "raibid.yaml", "redis:\n  url: [unclosed\n  prefix: x\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.message.startswith(f"{p}:") and "invalid YAML" in e.value.message


def test_cli_broken_config_exits_2_without_traceback(run, isolated_env):
    write(isolated_env / "raibid.yaml", "redis: {url: x\n")
    r = run("config", "show")
    assert r.code == 2
    assert "invalid YAML" in r.err and "raibid.yaml:" in r.err and "Traceback" not in r.err
    assert r.out == ""


def test_cli_unknown_key_exits_2(run, isolated_env):
    write(isolated_env / "raibid.yaml", "gitea:\n  token: abc\n")
    r = run("config", "show", "--json")
    assert r.code == 2 and "raibid.yaml:2: unknown key 'gitea.token'" in r.err
    assert "abc" not in r.err + r.out


def test_cli_missing_explicit_config_exits_2(run):
    r = run("--config", "nope.yaml", "config", "show")
    assert r.code == 2 and "config file not found: nope.yaml" in r.err


def test_config_show_json_masks_url_passwords(run):
    r = run("config", "show", "--json", env={"RAIBID_REDIS_URL": "redis://:hunter2@10.0.0.1:6379/0"})
    assert r.code == 0
    data = r.json()
    assert data["redis"]["url"] == "redis://:***@10.0.0.1:6379/0"
    assert "hunter2" not in r.out


def test_config_path_and_init(run, isolated_env):
    r = run("config", "path")
    assert r.code == 3 and "no config file found" in r.err
    r = run("config", "init", "raibid.yaml")
    assert r.code == 0 and (isolated_env / "raibid.yaml").exists()
    assert run("config", "path").out.strip() == str((isolated_env / "raibid.yaml").resolve())
    assert run("config", "path", "--json").json() == {"path": str((isolated_env / "raibid.yaml").resolve())}
    r = run("config", "init", "raibid.yaml")
    assert r.code == 2 and "--force" in r.err
    assert run("config", "init", "raibid.yaml", "--force").code == 0


def test_commented_default_file_loads_back_to_the_defaults(isolated_env):
    p = write(isolated_env / "raibid.yaml", commented_default_yaml())
    loaded = load_config(p)
    assert loaded.to_dict() == load_config(None).to_dict()  # same env overrides on both sides
    assert "# Env var holding the Redis password" in p.read_text()


def test_documented_config_reference_lists_every_key():
    from raibid.config import leaf_keys

    doc = (Path(__file__).parents[1] / "docs" / "config.md").read_text()
    for path, _ in leaf_keys():
        assert f"`{'.'.join(path)}`" in doc, path


def test_raibid_debug_adds_the_traceback(run, isolated_env):
    write(isolated_env / "raibid.yaml", "nope: 1\n")
    quiet = run("config", "show")
    assert quiet.code == 2 and "Traceback" not in quiet.err
    loud = run("config", "show", env={"RAIBID_DEBUG": "1"})
    assert loud.code == 2 and "Traceback" in loud.err and "unknown key 'nope'" in loud.err
