"""What a local run builds: the working tree as it is (or one commit), as a temporary bare repository.

The agent gets its source the way it does in a pod: it clones ``<gitea_url>/<repo>.git``
with git. Here ``gitea_url`` is a ``file://`` URL of a temporary directory holding one bare
repository with one commit, so the agent's clone path is the only way source reaches a job.

- The working tree (the default): every file git would consider (``git ls-files -co
  --exclude-standard``: tracked and untracked, .gitignore respected) that exists now,
  committed or not, is added to a temporary index of the bare repository and committed there.
  The user's repository is only read: no index refresh, no object, no ref is written in it.
- ``--commit REF``: that commit is fetched from the user's repository into the bare one.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from raibid.errors import UsageError

LOCAL_OWNER = "local"  # the OWNER of a local run's repo name (local/<directory name>)
WORKTREE_BRANCH = "raibid-run"  # the ref of a snapshot when the checkout has no branch (detached HEAD)
_IDENTITY = {"GIT_AUTHOR_NAME": "raibid run", "GIT_AUTHOR_EMAIL": "raibid@localhost",
             "GIT_COMMITTER_NAME": "raibid run", "GIT_COMMITTER_EMAIL": "raibid@localhost"}


@dataclass(frozen=True)
class Snapshot:
    """Where the agent clones from (``base_url`` as its gitea_url) and what it checks out."""

    base_url: str  # file:///.../git
    repo: str  # local/<name>
    commit: str  # the sha the job builds
    ref: str  # the branch name the job records
    files: int  # how many files went into it (0 for --commit)
    uncommitted: bool  # the snapshot differs from HEAD


def git(args: list[str], cwd: Path, env: dict[str, str] | None = None, stdin: bytes | None = None) -> str:
    """One git call; UsageError with git's last line when it fails (bad input: a ref, a path)."""
    from raibid.gitcreds import git_env

    base = git_env(base={**os.environ, **(env or {})})
    base.update(env or {})
    try:
        p = subprocess.run(["git", *args], cwd=cwd, env=base, input=stdin, capture_output=True, timeout=300)
    except FileNotFoundError:
        raise UsageError("git is not installed", hint="install git (apt-get install git)") from None
    if p.returncode != 0:
        from raibid.safetext import printable

        text = p.stderr.decode(errors="replace").strip().splitlines()
        raise UsageError(f"git {args[0]} in {cwd}: {printable(text[-1] if text else f'exit {p.returncode}')}")
    return p.stdout.decode(errors="replace")


def toplevel(path: Path) -> Path:
    """The work tree holding ``path``; UsageError (exit 2) when it is not in a git repository."""
    if not path.is_dir():
        raise UsageError(f"{path} is not a directory")
    try:
        out = git(["rev-parse", "--show-toplevel"], path)
    except UsageError:
        raise UsageError(f"{path} is not in a git repository",
                         hint="`raibid run` builds a git checkout: run `git init` there, or give the path of one") from None
    return Path(out.strip())


def build_root(path: Path, name: str) -> tuple[Path, Path]:
    """(the directory built, the git work tree holding it): ``path`` itself when it has the file
    ``name`` (a project in a subdirectory, like raibid's own templates/examples/hello), else the
    work tree's top. UsageError (exit 2) when ``path`` is not in a git repository."""
    top = toplevel(path)
    if path != top and os.path.lexists(path / name):
        return path, top
    return top, top


def current_branch(top: Path) -> str | None:
    """The checked-out branch, None on a detached HEAD."""
    p = subprocess.run(["git", "symbolic-ref", "-q", "--short", "HEAD"], cwd=top, capture_output=True, text=True)
    return p.stdout.strip() or None if p.returncode == 0 else None


def head_commit(top: Path) -> str | None:
    """HEAD's sha, None in a repository without a commit."""
    p = subprocess.run(["git", "rev-parse", "-q", "--verify", "HEAD^{commit}"], cwd=top, capture_output=True, text=True)
    return p.stdout.strip() or None


def is_branch(top: Path, name: str) -> bool:
    p = subprocess.run(["git", "show-ref", "-q", "--verify", "--", f"refs/heads/{name}"], cwd=top)
    return p.returncode == 0


def tag_at(top: Path, rev: str, name: str | None = None) -> str | None:
    """``name`` when it is a tag; else a tag pointing at ``rev``; None when there is none."""
    if name is not None:
        shown = subprocess.run(["git", "show-ref", "-q", "--verify", "--", f"refs/tags/{name}"], cwd=top)
        if shown.returncode == 0:
            return name
    p = subprocess.run(["git", "tag", "--points-at", rev], cwd=top, capture_output=True, text=True)
    tags = p.stdout.split()
    return tags[0] if p.returncode == 0 and tags else None


def repo_name(top: Path) -> str:
    """``local/<directory name>``, made a valid OWNER/NAME (what the job and ``when`` see as the repo)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", top.name).strip(".-") or "repo"
    return f"{LOCAL_OWNER}/{name[:100]}"


def resolve_commit(top: Path, ref: str) -> str:
    """The sha of ``ref`` in the user's repository (UsageError naming it when it is not a commit)."""
    try:
        return git(["rev-parse", "-q", "--verify", "--end-of-options", f"{ref}^{{commit}}"], top).strip()
    except UsageError:
        raise UsageError(f"--commit {ref!r} is not a commit in {top}") from None


def read_file(root: Path, name: str, commit: str | None) -> str | None:
    """``name`` from the working tree, or from ``commit``; None when it does not exist."""
    if commit is None:
        try:
            return (root / name).read_text(encoding="utf-8", errors="replace")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
    p = subprocess.run(["git", "cat-file", "blob", f"{commit}:./{name}"], cwd=root, capture_output=True)
    return p.stdout.decode("utf-8", errors="replace") if p.returncode == 0 else None


def snapshot(top: Path, dest: Path, *, ref: str, commit: str | None = None, within: Path | None = None) -> Snapshot:
    """A bare repository under ``dest`` with the working tree (or ``commit``) as branch ``ref``:
    ``top`` (a subdirectory of a work tree, ``within``, is built alone: its files become the root)."""
    repo = repo_name(top)
    base = dest / "git"
    bare = base / f"{repo}.git"
    bare.mkdir(parents=True)
    git(["init", "-q", "--bare"], bare)
    if commit is not None:
        work_tree = within or top
        git(["fetch", "-q", "--no-tags", "--end-of-options", str(work_tree), f"{commit}:refs/heads/{ref}"], bare)
        if within is not None and within != top:  # the subdirectory's tree as a commit of its own
            sub = top.relative_to(within).as_posix()
            sha = git(["commit-tree", "-m", f"raibid run: {sub} at {commit[:12]}", f"{commit}:{sub}"], bare,
                      dict(_IDENTITY)).strip()
            git(["update-ref", f"refs/heads/{ref}", sha], bare)
            return Snapshot(f"file://{base}", repo, sha, ref, 0, False)
        return Snapshot(f"file://{base}", repo, commit, ref, 0, False)
    listed = git(["ls-files", "-z", "-co", "--exclude-standard"], top).split("\0")
    # Tracked files deleted in the tree are not built; a submodule or a nested repository is a directory here.
    paths = sorted({p for p in listed if p and ((top / p).is_symlink() or (top / p).is_file())})
    env = {"GIT_DIR": str(bare), "GIT_WORK_TREE": str(top), "GIT_INDEX_FILE": str(dest / "index"), **_IDENTITY}
    if paths:
        git(["add", "-f", "--pathspec-from-file=-", "--pathspec-file-nul"], top, env,
            stdin="\0".join(paths).encode())
    tree = git(["write-tree"], top, env).strip()
    head = subprocess.run(["git", "rev-parse", "-q", "--verify", "HEAD:./"], cwd=top, capture_output=True,
                          text=True).stdout.strip()
    sha = git(["commit-tree", "-m", "raibid run: the working tree", tree], top, env).strip()
    git(["update-ref", f"refs/heads/{ref}", sha], top, env)
    return Snapshot(f"file://{base}", repo, sha, ref, len(paths), head != tree)
