"""scripts/lib.sh, which the README's two set-up commands use: root without sudo, users with it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _shim(bin_dir: Path, name: str, body: str) -> None:
    p = bin_dir / name
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(0o755)


def _run(tmp_path: Path, uid: int, *, sudo: bool, script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` after sourcing lib.sh, with `id -u` saying ``uid`` and sudo present or not."""
    shims = tmp_path / "bin"
    shims.mkdir()
    _shim(shims, "id", f'[ "$1" = "-u" ] && echo {uid} || exec /usr/bin/id "$@"')
    _shim(shims, "apt-get", f'echo "apt-get $*" >> {tmp_path}/calls')
    if sudo:
        _shim(shims, "sudo", f'echo "sudo $*" >> {tmp_path}/calls; exec "$@"')
    # Only the shims and the basics: no real sudo can be found, whatever this machine has.
    path = f"{shims}:/usr/bin:/bin"
    return subprocess.run(["/bin/bash", "-c", f". {ROOT}/scripts/lib.sh; {script}"], capture_output=True,
                          text=True, env={"PATH": path, "HOME": str(tmp_path)}, stdin=subprocess.DEVNULL)


def _calls(tmp_path: Path) -> list[str]:
    f = tmp_path / "calls"
    return f.read_text().splitlines() if f.exists() else []


def test_root_without_sudo_installs_directly(tmp_path):
    r = _run(tmp_path, 0, sudo=False, script="apt_install python3-venv")
    assert r.returncode == 0, r.stderr
    assert "sudo: command not found" not in r.stderr
    calls = _calls(tmp_path)
    assert calls[-1].startswith("apt-get install -y") and calls[-1].endswith("python3-venv")
    assert not any(c.startswith("sudo") for c in calls)


def test_root_never_goes_through_sudo_even_when_present(tmp_path):
    r = _run(tmp_path, 0, sudo=True, script="apt_install redis-server")
    assert r.returncode == 0, r.stderr
    assert not any(c.startswith("sudo") for c in _calls(tmp_path))


def test_user_with_sudo_uses_it(tmp_path):
    r = _run(tmp_path, 1000, sudo=True, script="apt_install redis-server")
    assert r.returncode == 0, r.stderr
    assert any(c.startswith("sudo env DEBIAN_FRONTEND=noninteractive apt-get install") for c in _calls(tmp_path))


def test_user_without_sudo_is_told_what_to_do(tmp_path):
    r = _run(tmp_path, 1000, sudo=False, script="apt_install redis-server")
    assert r.returncode == 2
    assert "needs root for" in r.stderr and "redis-server" in r.stderr
    assert _calls(tmp_path) == []


@pytest.mark.parametrize("name", ["install", "test"])
def test_setup_scripts_use_the_shared_root_helper(name):
    text = (ROOT / "scripts" / name).read_text()
    assert ". scripts/lib.sh" in text
    assert "sudo" not in text.replace("lib.sh", "")  # one place decides how to become root
    assert os.access(ROOT / "scripts" / name, os.X_OK)


def test_readme_setup_commands_are_the_scripts():
    readme = (ROOT / "README.md").read_text()
    assert "scripts/install" in readme and "scripts/test" in readme
    assert "sudo apt-get" not in readme
