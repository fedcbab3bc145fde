"""Agent types: built-ins, overrides, `extends`, entry points, and the `.raibid.yml` parser."""

from __future__ import annotations

import pytest

from raibid.agents.pipeline import PipelineError, parse
from raibid.agents.types import BUILTIN, _base_from, enabled_types, resolve_types
from raibid.config import load_config
from raibid.errors import ConfigError


def cfg(tmp_path, text: str):
    p = tmp_path / "raibid.yaml"
    p.write_text(text)
    return load_config(p)


def test_builtins_have_the_documented_defaults():
    types = resolve_types(load_config(), plugins={})
    assert set(types) == set(BUILTIN) == {"generic", "rust", "python", "node", "go", "gpu", "image"}
    for t in types.values():
        if t.name != "gpu":
            assert (t.cpu, t.memory, t.cpu_limit, t.memory_limit) == ("2", "4Gi", "2", "4Gi")
    assert types["generic"].caches == {} and types["generic"].env == {}
    assert set(enabled_types(load_config())) == {"generic", "rust", "python", "node", "go"}


def test_override_changes_only_the_given_fields(tmp_path):
    t = resolve_types(cfg(tmp_path, "agents:\n  types:\n    rust:\n      memory: 8Gi\n      env: {A: b}\n"),
                      plugins={})["rust"]
    assert t.memory == "8Gi" and t.memory_limit == "8Gi" and t.cpu == "2"
    assert t.env["A"] == "b" and t.env["RUSTC_WRAPPER"] == "sccache" and t.source == "built-in + config"


def test_extends_is_for_new_types_only(tmp_path):
    with pytest.raises(ConfigError) as e:
        resolve_types(cfg(tmp_path, "agents:\n  types:\n    rust:\n      extends: go\n"), plugins={})
    assert "`extends` is only for new types" in e.value.message


def test_a_disabled_type_gets_no_pool_and_bad_values_are_errors(tmp_path):
    c = cfg(tmp_path, "agents:\n  types:\n    node:\n      enabled: false\n")
    assert "node" not in enabled_types(c)
    for text, msg in [("agents:\n  types:\n    rust:\n      lag_count: 0\n", "'agents.types.rust.lag_count' must be at least 1"),
                      ("agents:\n  types:\n    rust:\n      caches: {x: relative}\n", "must be an absolute path"),
                      ("agents:\n  types:\n    Bad_Name: {}\n", "invalid agent type"),
                      ("agents:\n  default_type: cobol\n", "agents.default_type: unknown type 'cobol'"),
                      ("agents:\n  pools: [cobol]\n", "agents.pools: unknown type 'cobol'")]:
        with pytest.raises(ConfigError) as e:
            resolve_types(cfg(tmp_path, text), plugins={})
        assert msg in e.value.message, text


def test_entry_point_types_are_a_base_that_config_can_override(tmp_path):
    plugin = {"zig": (_base_from({"image": "reg/zig:0.13", "cpu": "4", "env": {"ZIG_GLOBAL_CACHE_DIR": "/cache/zig"},
                                  "caches": {"zig": "/cache/zig"}}), "entry point raibid-zig")}
    types = resolve_types(cfg(tmp_path, "agents:\n  types:\n    zig: {max_replicas: 2}\n"), plugins=plugin)
    z = types["zig"]
    assert (z.image, z.cpu, z.max_replicas, z.caches) == ("reg/zig:0.13", "4", 2, {"zig": "/cache/zig"})
    assert z.enabled and z.source == "entry point raibid-zig"
    with pytest.raises(ConfigError):
        _base_from({"imgae": "x"})


@pytest.mark.parametrize("name", ["zig_x", "zig\n", "zig.x"])
def test_an_entry_point_type_name_is_checked_in_full(name):
    # The loader checks configured names; an entry point's name only here, which used re.match ("zig" + junk).
    plugin = {name: (_base_from({"image": "reg/zig:0.13"}), "entry point raibid-zig")}
    with pytest.raises(ConfigError, match="invalid type name"):
        resolve_types(load_config(), plugins=plugin)


PIPE_ERRORS = [
    ("steps: [\n", ".raibid.yml:2: invalid YAML"),
    ("", ".raibid.yml: the file is empty"),
    ("env: {A: b}\n", ".raibid.yml:1: no `steps:` list"),
    ("steps: []\n", ".raibid.yml:1: `steps` must be a non-empty list"),
    ("steps:\n  - name: a\n", ".raibid.yml:2: step 1: `run` is required"),
    ("steps:\n  - run: x\n    timeout: soon\n", ".raibid.yml:3: step 'step-1': `timeout`: invalid duration 'soon'"),
    ("steps:\n  - run: x\n  - run: y\n    env: {1X: a}\n", ".raibid.yml:4: step 'step-2': `env`: invalid variable"),
    ("stages:\n  - run: x\n", ".raibid.yml:1: unknown key 'stages'"),
    ("steps:\n  - {name: a, run: x}\n  - {name: a, run: y}\n", ".raibid.yml:3: step 2: duplicate step name 'a'"),
    ("steps:\n  - run: [x]\n", ".raibid.yml:2: step 1: `run` must be a non-empty string"),
]


@pytest.mark.parametrize(("text", "message"), PIPE_ERRORS)
def test_malformed_pipeline_names_the_line(text, message):
    with pytest.raises(PipelineError) as e:
        parse(text)
    assert e.value.message.startswith(message), e.value.message


def test_pipeline_parses_steps_env_and_timeouts():
    steps = parse("env: {A: '1'}\nsteps:\n  - name: build\n    run: make\n    timeout: 10m\n"
                  "  - run: make test\n    env: {A: '2', B: x}\n")
    assert [(s.name, s.run, s.timeout) for s in steps] == [("build", "make", 600.0), ("step-2", "make test", None)]
    assert steps[0].env == {"A": "1"} and steps[1].env == {"A": "2", "B": "x"}


def test_each_enabled_type_has_a_trusted_and_an_untrusted_pool():
    from raibid.agents.types import enabled_pools, pool_settings

    pools = enabled_pools(load_config())
    assert list(pools)[:2] == ["generic", "generic-untrusted"]
    assert set(pools) == {f"{t}{s}" for t in ("generic", "rust", "python", "node", "go") for s in ("", "-untrusted")}
    rust, untrusted = pools["rust"], pools["rust-untrusted"]
    assert (rust.agent_type, rust.trusted, rust.scaled_job, rust.cache_pvc) == (
        "rust", True, "raibid-agent-rust", "raibid-agent-cache-rust-trusted")
    assert (untrusted.agent_type, untrusted.trust, untrusted.scaled_job, untrusted.cache_pvc) == (
        "rust", "untrusted", "raibid-agent-rust-untrusted", "raibid-agent-cache-rust-untrusted")
    assert pool_settings(load_config())["rust-untrusted"] == (1, 8)


def test_a_type_names_both_its_pools_and_type_untrusted_one():
    from raibid.agents.types import enabled_pools, select_pools
    from raibid.errors import UsageError

    pools = enabled_pools(load_config())
    assert [p.name for p in select_pools(pools, "go")] == ["go", "go-untrusted"]
    assert [p.name for p in select_pools(pools, "go-untrusted")] == ["go-untrusted"]
    assert [p.name for p in select_pools(pools, "go", "trusted")] == ["go"]
    assert [p.name for p in select_pools(pools, "go", "untrusted")] == ["go-untrusted"]
    with pytest.raises(UsageError) as e:
        select_pools(pools, "gpu")
    assert "has no pool" in e.value.message and "rust" in (e.value.hint or "")
    with pytest.raises(UsageError):
        select_pools(pools, "go-untrusted", "trusted")
