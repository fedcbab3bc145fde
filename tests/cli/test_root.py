"""The root command: version, help, entry points, and lazy imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from raibid import __version__

HEAVY = ("kubernetes", "redis", "git", "jinja2")


def _python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)


def test_version_flag(run):
    r = run("--version")
    assert r.code == 0 and r.out.strip() == f"raibid {__version__}"


def test_python_dash_m_works():
    r = subprocess.run([sys.executable, "-m", "raibid", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and __version__ in r.stdout


def test_help_lists_groups_and_env_vars(run):
    r = run("--help")
    assert r.code == 0
    for group in ("cluster", "queue", "gitea", "config", "doctor", "completion"):
        assert f"  {group} " in r.out
    for env in ("RAIBID_CONFIG", "KUBECONFIG", "RAIBID_CONTEXT", "RAIBID_NAMESPACE", "NO_COLOR"):
        assert env in r.out


CHECK_IMPORTS = """
import json, sys
from raibid.cli import main
try:
    main({args!r})
except SystemExit:
    pass
heavy = [m for m in {heavy!r} if m in sys.modules]
sys.stderr.write("HEAVY=" + json.dumps(heavy) + "\\n")
"""


def test_help_imports_no_heavy_library():
    r = _python(CHECK_IMPORTS.format(args=["--help"], heavy=HEAVY))
    assert "Commands:" in r.stdout
    assert "HEAVY=[]" in r.stderr, r.stderr


def test_group_help_imports_no_heavy_library():
    for group in ("cluster", "queue", "gitea", "gitops", "config", "doctor"):
        r = _python(CHECK_IMPORTS.format(args=[group, "--help"], heavy=HEAVY))
        assert "HEAVY=[]" in r.stderr, (group, r.stderr)


def test_group_help_builds_no_application_and_reads_no_config():
    # `raibid.app` holds the Application; `raibid.config.loader` reads raibid.yaml. Neither is needed for help.
    for group in ("cluster", "queue", "gitea", "gitops", "config", "doctor"):
        r = _python(CHECK_IMPORTS.format(args=[group, "--help"], heavy=("raibid.app", "raibid.config.loader", "yaml")))
        assert "Usage:" in r.stdout and "HEAVY=[]" in r.stderr, (group, r.stderr)


def test_completion_request_imports_no_heavy_library():
    env = {"_RAIBID_COMPLETE": "bash_complete", "COMP_WORDS": "raibid con", "COMP_CWORD": "1"}
    r = _python(CHECK_IMPORTS.format(args=None, heavy=HEAVY), env=env)
    assert "plain,config" in r.stdout
    assert "HEAVY=[]" in r.stderr, r.stderr


def test_cluster_render_imports_no_kubernetes():
    r = _python(CHECK_IMPORTS.format(args=["cluster", "render"], heavy=("kubernetes", "redis", "git")))
    assert "kind: StatefulSet" in r.stdout
    assert "HEAVY=[]" in r.stderr, r.stderr


def test_unknown_command_is_usage_error(run):
    r = run("frobnicate")
    assert r.code == 2 and "No such command" in r.err


def test_exit_codes_are_documented():
    from pathlib import Path

    from raibid.errors import ExitCode

    doc = (Path(__file__).parents[2] / "docs" / "exit-codes.md").read_text()
    for code in ExitCode:
        assert f"| {code.value} | `{code.name}`" in doc


def test_doctor_json_without_cluster_reports_failures(run, redis_url):
    r = run("doctor", "--json")
    data = json.loads(r.out)
    assert r.code == 1 and data["ok"] is False
    byname = {c["name"]: c for c in data["checks"]}
    assert byname["kubeconfig"]["status"] == "fail"
    assert byname["redis"]["status"] == "ok" and byname["redis-version"]["status"] == "ok"


def test_no_color_with_any_non_empty_value_turns_colour_off(run, monkeypatch):
    from raibid.cli import cli
    from raibid.terminal import Terminal

    for value, off in (("anything", True), ("1", True), ("0", True), ("false", True), ("", False)):
        monkeypatch.setenv("NO_COLOR", value)
        with cli.make_context("raibid", ["config", "path"]) as ctx:
            assert ctx.params["no_color"] is off, value
        assert Terminal().color is not off, value
        r = run("config", "path")
        assert r.code == 3 and "Usage" not in r.err, (value, r.err)  # exit 3: no config file, not 2
