"""The snapshot a local run builds: the working tree as it is, in a temporary bare repo; the user's repo only read."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from raibid.errors import UsageError
from raibid.local import source

ID = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
      "GIT_COMMITTER_EMAIL": "t@example.com"}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **ID}, check=True, capture_output=True,
                          text=True).stdout


def repo(tmp_path: Path) -> Path:
    r = tmp_path / "my repo!"
    (r / "sub").mkdir(parents=True)
    (r / "a.txt").write_text("committed\n")
    (r / "sub" / "b.txt").write_text("b\n")
    (r / ".gitignore").write_text("build/\n*.tmp\n")
    git(r, "init", "-q", "-b", "main")
    git(r, "add", "-A")
    git(r, "commit", "-q", "-m", "one")
    return r


def digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def files_of(bare: Path, sha: str) -> dict[str, str]:
    names = git(bare, "ls-tree", "-r", "--name-only", sha).split()
    return {n: git(bare, "cat-file", "blob", f"{sha}:{n}") for n in names}


def test_the_snapshot_is_the_working_tree_with_ignores_and_deletions(tmp_path: Path) -> None:
    r = repo(tmp_path)
    (r / "a.txt").write_text("edited\n")
    (r / "new.txt").write_text("untracked\n")
    (r / "x.tmp").write_text("ignored\n")
    (r / "build").mkdir()
    (r / "build" / "out").write_text("ignored too\n")
    (r / "sub" / "b.txt").unlink()
    before = digest(r)
    snap = source.snapshot(r, tmp_path / "snap", ref="main")
    bare = tmp_path / "snap" / "git" / "local" / "my-repo.git"
    assert snap.repo == "local/my-repo" and snap.base_url == f"file://{tmp_path / 'snap' / 'git'}"
    assert snap.uncommitted is True
    assert files_of(bare, snap.commit) == {".gitignore": "build/\n*.tmp\n", "a.txt": "edited\n",
                                           "new.txt": "untracked\n"}
    assert git(bare, "rev-parse", "refs/heads/main").strip() == snap.commit
    assert digest(r) == before  # .git included: no object, no ref, no index refresh in the user's repo


def test_a_clean_tree_is_not_uncommitted_and_commit_ref_fetches_that_commit(tmp_path: Path) -> None:
    r = repo(tmp_path)
    assert source.snapshot(r, tmp_path / "s1", ref="main").uncommitted is False
    first = git(r, "rev-parse", "HEAD").strip()
    (r / "a.txt").write_text("second\n")
    git(r, "commit", "-qam", "two")
    snap = source.snapshot(r, tmp_path / "s2", ref="old", commit=source.resolve_commit(r, "HEAD~1"))
    assert snap.commit == first
    assert files_of(tmp_path / "s2" / "git" / "local" / "my-repo.git", first)["a.txt"] == "committed\n"


def test_a_subdirectory_with_its_own_file_is_built_alone(tmp_path: Path) -> None:
    r = repo(tmp_path)
    (r / "sub" / ".raibid.yml").write_text("steps:\n  - run: echo\n")
    root, top = source.build_root(r / "sub", ".raibid.yml")
    assert (root, top) == (r / "sub", r)
    snap = source.snapshot(root, tmp_path / "s", ref="main", within=top)
    assert snap.repo == "local/sub"
    assert sorted(files_of(tmp_path / "s" / "git" / "local" / "sub.git", snap.commit)) == [".raibid.yml", "b.txt"]
    git(r, "add", "-A")
    git(r, "commit", "-qm", "sub file")
    snap = source.snapshot(root, tmp_path / "s3", ref="main", commit=source.resolve_commit(r, "HEAD"), within=top)
    assert sorted(files_of(tmp_path / "s3" / "git" / "local" / "sub.git", snap.commit)) == [".raibid.yml", "b.txt"]
    assert source.build_root(r, ".raibid.yml") == (r, r)  # no file at the top: the top is still the root


def test_not_a_repo_and_a_bad_commit_are_usage_errors(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(UsageError, match="is not in a git repository"):
        source.toplevel(plain)
    with pytest.raises(UsageError, match="--commit 'nope' is not a commit"):
        source.resolve_commit(repo(tmp_path), "nope")


def test_an_option_like_ref_is_never_an_option(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is not a commit"):
        source.resolve_commit(repo(tmp_path), "--output=/tmp/x")
