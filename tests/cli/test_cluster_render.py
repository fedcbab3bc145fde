"""`raibid cluster render`: no cluster, no config."""

from __future__ import annotations

import shutil
import stat

import yaml

from raibid.cluster.render import templates_dir


def test_render_on_defaults_prints_every_component(run):
    r = run("cluster", "render")
    assert r.code == 0, r.err
    docs = [d for d in yaml.safe_load_all(r.out) if d]
    comps = {d["metadata"]["labels"]["raibid.dev/component"] for d in docs}
    assert comps == {"namespace", "redis", "gitea", "keda", "flux", "agents"}
    assert r.err == ""


def test_render_needs_no_kubeconfig(run, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    r = run("cluster", "render", "-c", "redis")
    assert r.code == 0
    kinds = [d["kind"] for d in yaml.safe_load_all(r.out) if d]
    assert "HelmChart" not in kinds and "StatefulSet" in kinds


def test_render_to_directory_one_file_per_object(run, isolated_env):
    r = run("cluster", "render", "-c", "redis", "-c", "gitea", "-c", "keda", "-c", "flux", "--out", "out")
    assert r.code == 0
    files = sorted((isolated_env / "out").iterdir())
    assert len(files) == 12 and files[0].name == "00-namespace-namespace-raibid-ci.yaml"
    assert {f.name for f in files if "-networkpolicy-" in f.name} == {"02-redis-networkpolicy-raibid-redis.yaml",
                                                                      "06-gitea-networkpolicy-raibid-gitea.yaml"}
    secret = next(f for f in files if "-secret-" in f.name)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert "wrote 12 files" in r.err


def test_unknown_component_exits_2(run):
    r = run("cluster", "render", "-c", "nginx")
    assert r.code == 2 and "unknown component 'nginx'" in r.err and r.out == ""


def test_broken_custom_template_exits_2_without_traceback(run, isolated_env):
    custom = isolated_env / "tpl"
    shutil.copytree(templates_dir(), custom)
    (custom / "redis" / "service.yaml.j2").write_text("kind: Service\nmetadata: {name: {{ oops }}}\n")
    (isolated_env / "raibid.yaml").write_text(f"cluster:\n  templates_dir: {custom}\n")
    r = run("cluster", "render")
    assert r.code == 2
    assert "templates/redis/service.yaml.j2:2: missing template value: 'oops' is undefined" in r.err
    assert "Traceback" not in r.err
