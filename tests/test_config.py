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
    dumped = json.dumps(cfg.to_dict())
    assert "tok-SECRET-1" not in dumped and "pw-SECRET-2" not in dumped  # (env var *names* may say SECRET)


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


def test_cluster_mode_and_gitops_section(isolated_env):
    cfg = load_config()
    assert cfg.cluster.mode == "apply" and cfg.gitops.branch == "main" and cfg.gitops.path == "clusters/dgx-spark"
    assert cfg.gitops.interval == "1m" and cfg.gitops_repo == "raibid-admin/raibid-ci-config"
    p = write(isolated_env / "a.yaml", "cluster:\n  mode: gitops\ngitops:\n  repo: ci/state\n")
    cfg = load_config(p)
    assert cfg.cluster.mode == "gitops" and cfg.gitops_repo == "ci/state"
    assert load_config(None, env={"RAIBID_GITOPS_BRANCH": "live"}).gitops.branch == "live"
    p = write(isolated_env / "b.yaml", "cluster:\n  namespace: x\n  mode: flux\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.message == f"{p}:3: 'cluster.mode' must be one of apply, gitops, got 'flux'"
    with pytest.raises(ConfigError) as e:
        load_config(None, env={"RAIBID_CLUSTER_MODE": "kapp"})
    assert e.value.message == "env RAIBID_CLUSTER_MODE: 'cluster.mode' must be one of apply, gitops, got 'kapp'"
    p = write(isolated_env / "c.yaml", "gitops:\n  reop: x/y\n")
    with pytest.raises(ConfigError, match="unknown key 'gitops.reop'"):
        load_config(p)


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


# ----------------------------------------------------------------------------- robustness


BOMB = "".join(f"{k}: &{k} [" + ",".join([f"*{p}"] * 9 if p else ['"lol"'] * 9) + "]\n"
               for p, k in zip(["", *"abcdefgh"], "abcdefghi", strict=True)) + "mirror:\n  orgs: [*i]\n"


def test_alias_bomb_is_refused_quickly_with_exit_2(isolated_env):
    import subprocess
    import sys
    import time

    p = write(isolated_env / "raibid.yaml", BOMB)
    assert len(BOMB) < 1500
    start = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "raibid", "config", "show"], capture_output=True, text=True,
                       timeout=60, cwd=isolated_env)
    assert r.returncode == 2, r.stderr
    assert f"{p.name}:" in r.stderr and "aliases expand to more than" in r.stderr and "Traceback" not in r.stderr
    assert time.monotonic() - start < 20


def test_alias_bomb_in_an_env_override_is_refused(isolated_env):
    import os
    import subprocess
    import sys

    bomb = "[" + ", ".join(BOMB.splitlines()[i].split(": ", 1)[1] for i in range(9)).replace("&", " &") + "]"
    with pytest.raises(ConfigError) as e:
        load_config(None, env={"RAIBID_MIRROR_ORGS": bomb})
    assert e.value.message.startswith("env RAIBID_MIRROR_ORGS: YAML aliases expand to more than")
    r = subprocess.run([sys.executable, "-m", "raibid", "config", "show"], capture_output=True, text=True,
                       timeout=60, cwd=isolated_env, env={**os.environ, "RAIBID_MIRROR_ORGS": bomb})
    assert r.returncode == 2 and "RAIBID_MIRROR_ORGS" in r.stderr


def test_self_referencing_alias_is_refused(isolated_env):
    p = write(isolated_env / "raibid.yaml", "mirror:\n  orgs: &x [a, *x]\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.message.startswith(f"{p}:2:") and "refers to the node that contains it" in e.value.message


def test_ordinary_aliases_still_work(isolated_env):
    p = write(isolated_env / "raibid.yaml",
              "agents:\n  types:\n    a: &t {image: x, cpu: '4'}\n    b: *t\n")
    assert load_config(p).agents.types["b"].cpu == "4"


def test_non_utf8_config_names_file_and_line(run, isolated_env):
    p = isolated_env / "raibid.yaml"
    p.write_bytes(b"redis:\n  prefix: caf\xe9\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.message == f"{p}:2: the config file is not UTF-8 text (byte 0xe9)"
    r = run("config", "show")
    assert r.code == 2 and "not UTF-8" in r.err and "Traceback" not in r.err


@pytest.mark.parametrize(("yaml_text", "expected"), [
    ("gitea:\n  url: http://gitea:30a80\n", "2: 'gitea.url' is not a usable URL (the port '30a80' is not a number"),
    ("gitea:\n  url: http://git ea:3000\n", "2: 'gitea.url' is not a usable URL (it contains a space)"),
    ("gitea:\n  url: gitea:3000\n", "2: 'gitea.url' is not a usable URL (it must start with http:// or https://)"),
    ("gitea:\n  url: http://\n", "2: 'gitea.url' is not a usable URL (it has no host)"),
    ("gitea:\n  timeout: 0\n", "2: 'gitea.timeout' must be greater than 0, got 0"),
    ("gitea:\n\n  total_timeout: -5\n", "3: 'gitea.total_timeout' must be greater than 0"),
    ("gitea:\n  retries: -1\n", "2: 'gitea.retries' must be at least 0, got -1"),
    # .inf passed every bound, then overflowed the socket timeout with a traceback
    ("gitea:\n  timeout: .inf\n", "2: 'gitea.timeout' must be a finite number, got inf"),
    ("gitea:\n  total_timeout: .nan\n", "2: 'gitea.total_timeout' must be a finite number, got nan"),
    ("gitea:\n  retry_backoff: -.inf\n", "2: 'gitea.retry_backoff' must be a finite number, got -inf"),
    ("gitea:\n  timeout: 1.0e+12\n", "2: 'gitea.timeout' must be at most 86400, got 1000000000000.0"),
    ("queue:\n  max_deliveries: 0\n", "2: 'queue.max_deliveries' must be at least 1, got 0"),
    ("queue:\n  heartbeat: -30\n", "2: 'queue.heartbeat' must be greater than 0"),
    ("agents:\n  types:\n    rust:\n      lag_count: 0\n", "4: 'agents.types.rust.lag_count' must be at least 1"),
    ("mirror:\n  jobs: 0\n", "2: 'mirror.jobs' must be at least 1"),
    ("cluster:\n  gitea_http_node_port: 70000\n", "2: 'cluster.gitea_http_node_port' must be at most 65535"),
    ("redis:\n  url: localhost:6379\n", "2: 'redis.url' is not a usable URL (it must start with redis://"),
])
def test_bad_values_are_rejected_at_load_naming_file_line_and_key(isolated_env, yaml_text, expected):
    p = write(isolated_env / "raibid.yaml", yaml_text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.message.startswith(f"{p}:{expected}"), e.value.message


def test_good_edge_values_load():
    cfg = load_config(None, env={"RAIBID_GITEA_RETRIES": "0", "RAIBID_GITEA_RETRY_BACKOFF": "0",
                                 "RAIBID_REDIS_URL": "auto", "RAIBID_GITEA_URL": "https://gitea.lan"})
    assert cfg.gitea.retries == 0 and cfg.redis.url == "auto"
    assert load_config(None, env={"RAIBID_REDIS_URL": "unix:///run/redis.sock"}).redis.url.startswith("unix:")


def test_url_with_credentials_and_no_scheme_never_shows_the_password(isolated_env):
    p = write(isolated_env / "raibid.yaml", "gitea:\n  url: admin:s3cret-pw@gitea:3000\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "s3cret-pw" not in e.value.message and "admin:***@gitea:3000" in e.value.message


def test_bad_env_values_name_the_variable_and_key():
    with pytest.raises(ConfigError) as e:
        load_config(None, env={"RAIBID_GITEA_TIMEOUT": "-1"})
    assert e.value.message == "env RAIBID_GITEA_TIMEOUT: 'gitea.timeout' must be greater than 0, got -1.0"
    with pytest.raises(ConfigError) as e:
        load_config(None, env={"RAIBID_GITEA_TOTAL_TIMEOUT": ".inf"})
    assert e.value.message == "env RAIBID_GITEA_TOTAL_TIMEOUT: 'gitea.total_timeout' must be a finite number, got inf"
    with pytest.raises(ConfigError) as e:
        load_config(None, env={"RAIBID_GITEA_URL": "http://u:pw-SECRET@h:x"})
    assert "pw-SECRET" not in e.value.message and "RAIBID_GITEA_URL" in e.value.message


def test_config_init_creates_the_file_0600(run, isolated_env):
    import stat

    assert run("config", "init", "raibid.yaml").code == 0
    assert stat.S_IMODE((isolated_env / "raibid.yaml").stat().st_mode) == 0o600


def test_config_init_into_a_path_that_cannot_be_created_exits_2(run, isolated_env):
    write(isolated_env / "afile", "")
    r = run("config", "init", str(isolated_env / "afile" / "sub" / "raibid.yaml"))
    assert r.code == 2 and "cannot write" in r.err and "Traceback" not in r.err


# ----------------------------------------------------------------------------- masking URLs


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:hunter2@10.0.0.1:6379/0", "redis://:***@10.0.0.1:6379/0"),
    ("http://user:hunter2@127.0.0.1:1/x", "http://user:***@127.0.0.1:1/x"),
    ("http://hunter2@gitea/", "http://***@gitea/"),
    ("user:hunter2@gitea:3000", "user:***@gitea:3000"),  # no scheme
    ("//user:hunter2@gitea", "//user:***@gitea"),
    ("http://user:hunter2@gitea:30a80/api", "http://user:***@gitea:30a80/api"),  # non-numeric port
    ("http://user:hunter2@[::1/x", "http://user:***@[::1/x"),  # unparseable for urllib
    ("https://gitea/api?token=hunter2&page=2", "https://gitea/api?token=***&page=2"),
    ("https://gitea/api?x=1&access_token=hunter2#frag", "https://gitea/api?x=1&access_token=***#frag"),
    ("http://gitea:3000/api/v1", "http://gitea:3000/api/v1"),
    ("auto", "auto"),
    ("", ""),
])
def test_redact_url_masks_credentials_in_every_form(url, shown):
    from raibid.errors import redact_url

    assert redact_url(url) == shown
