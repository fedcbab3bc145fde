"""The config repo through GitPython: a working clone per run, write, commit only on change, push.

The token reaches git only through the environment (``GIT_CONFIG_COUNT`` with
``http.extraHeader``), never through the remote URL (stored in ``.git/config``),
argv or any message. The clone lives in a temporary folder that is removed when
the run ends, so an interrupted run leaves nothing behind but the remote, which
a push updates atomically or not at all.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raibid.errors import AuthError, GiteaError, RaibidError, Unreachable, UsageError, redact_url
from raibid.gitops.tree import KUSTOMIZATION, TreeFile, object_ref

_BRANCH = re.compile(r"[A-Za-z0-9._/-]+")


class PushRejected(RaibidError):
    """The remote refused the push (its branch moved, or a hook said no). Nothing was pushed. Exit 1."""


@dataclass(frozen=True)
class RepoRef:
    owner: str
    name: str

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


def parse_repo(full: str) -> RepoRef:
    """``gitops.repo`` as OWNER/NAME that Gitea accepts (``raibid.gitea.names``); usage error (2) otherwise."""
    from raibid.gitea.names import owner_problem, repo_problem

    owner, sep, name = full.strip().partition("/")
    problem = None
    if not sep or "/" in name:
        problem = "expected OWNER/NAME, e.g. raibid-admin/raibid-ci-config"
    elif owner_problem(owner):
        problem = f"expected OWNER/NAME, and Gitea refuses the owner {owner!r}: {owner_problem(owner)}"
    elif repo_problem(name):
        problem = f"expected OWNER/NAME, and Gitea refuses the name {name!r}: {repo_problem(name)}"
    if problem:
        raise UsageError(f"invalid gitops.repo {full!r}: {problem}",
                         hint="set gitops.repo in raibid.yaml (or RAIBID_GITOPS_REPO)")
    return RepoRef(owner, name)


def check_branch(branch: str) -> str:
    if not _BRANCH.fullmatch(branch) or branch.startswith(("-", "/", ".")) or branch.endswith(("/", ".lock", ".")) \
            or ".." in branch or "//" in branch or "/." in branch:
        raise UsageError(f"invalid gitops.branch {branch!r}: not a valid git branch name (letters, digits, "
                         "'.', '_', '-' and '/'; no leading '-', '/' or '.', no '..', no trailing '/', '.' or '.lock')",
                         hint="set gitops.branch in raibid.yaml (or RAIBID_GITOPS_BRANCH), e.g. main")
    return branch


def auth_env(username: str, token: str) -> dict[str, str]:
    """Environment that makes git send Basic auth (user:token) and never prompt, sign or store anything."""
    basic = base64.b64encode(f"{username}:{token}".encode()).decode()
    pairs = [("http.extraHeader", f"Authorization: Basic {basic}"),
             ("credential.helper", ""),  # no helper is asked (or told) about the token
             ("commit.gpgSign", "false"), ("core.hooksPath", "/dev/null"),
             ("core.autocrlf", "false")]  # the bytes raibid renders are the bytes committed
    env = {"GIT_CONFIG_COUNT": str(len(pairs)), "GIT_TERMINAL_PROMPT": "0"}
    for i, (key, value) in enumerate(pairs):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env


def _git_error(e: Any, what: str, url: str) -> RaibidError:
    """A GitCommandError as a typed error; git's stderr never holds the token (it is not in the URL)."""
    stderr = (getattr(e, "stderr", "") or "").strip().replace("stderr: ", "").strip("'\" \n")
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    detail = lines[-1] if lines else str(getattr(e, "status", "")) or "git failed"
    low = stderr.lower()
    where = redact_url(url)
    if any(s in low for s in ("could not resolve host", "failed to connect", "connection refused",
                              "couldn't connect", "timed out", "connection reset", "empty reply",
                              "did not complete in")):  # the last: GitPython's kill_after_timeout
        return Unreachable(f"cannot reach the config repo at {where} ({what}): {detail}",
                           hint="is Gitea running? check gitea.url (RAIBID_GITEA_URL)")
    if any(s in low for s in ("authentication failed", "401", "403", "could not read username")):
        return AuthError(f"Gitea refused {what} of {where}: {detail}",
                         hint="check the Gitea token (gitea.token_env) and its write:repository scope")
    return GiteaError(f"git {what} of {where} failed: {detail}")


def remote_head(url: str, branch: str, env: dict[str, str], *, timeout: float) -> str | None:
    """The sha of ``branch`` on the remote (None when the branch does not exist yet)."""
    import git

    g = git.Git()
    g.update_environment(**env)
    try:
        out = g.ls_remote(url, f"refs/heads/{branch}", kill_after_timeout=timeout)
    except git.GitCommandError as e:
        raise _git_error(e, "ls-remote", url) from None
    for line in str(out).splitlines():  # str: GitPython types a command's result as any of its forms
        sha, _, ref = line.partition("\t")
        if ref == f"refs/heads/{branch}":
            return sha
    return None


@dataclass
class FileChange:
    """One file of the folder that a commit adds, modifies or deletes, and the object it holds."""

    action: str  # added, modified, deleted
    file: str  # path in the repo
    object: str | None = None  # Kind/namespace/name; None for kustomization.yaml


class Checkout:
    """A working clone of one branch of the config repo, in a folder the caller owns."""

    def __init__(self, repo: Any, url: str, branch: str, timeout: float) -> None:
        self.repo = repo
        self.url = url
        self.branch = branch
        self.timeout = timeout
        self.root = Path(repo.working_tree_dir)
        self.base: str | None = None  # the remote head this clone started from

    def _fetch(self) -> None:
        import git

        self.base = remote_head(self.url, self.branch, dict(self.repo.git.environment()), timeout=self.timeout)
        if self.base is None:
            return  # an empty repo or a new branch: the first commit is a root commit
        try:
            self.repo.git.fetch("-q", "origin", f"+refs/heads/{self.branch}:refs/remotes/origin/{self.branch}",
                                kill_after_timeout=self.timeout)
            self.repo.git.checkout("-q", "-B", self.branch, f"refs/remotes/origin/{self.branch}")
        except git.GitCommandError as e:
            raise _git_error(e, "fetch", self.url) from None
        self.base = self.repo.head.commit.hexsha

    def read(self, path: str) -> dict[str, str]:
        """The top-level files of ``path`` (name -> text)."""
        folder = self.root / path
        if not folder.is_dir():
            return {}
        return {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.iterdir()) if p.is_file()}

    def write(self, path: str, files: list[TreeFile]) -> list[FileChange]:
        """Make ``path`` hold exactly ``files`` (top-level files only; subfolders are left alone)."""
        from raibid.yamlio import load

        old = self.read(path)
        new = {f.name: f for f in files}
        folder = self.root / path
        folder.mkdir(parents=True, exist_ok=True)
        changes: list[FileChange] = []
        for name, text in old.items():
            if name not in new:
                (folder / name).unlink()
                try:
                    ref = object_ref(load(text)) if name != KUSTOMIZATION else None
                except Exception:  # noqa: BLE001 - a hand-made file: name the file, not an object
                    ref = None
                changes.append(FileChange("deleted", f"{path}/{name}", ref))
        for name, f in new.items():
            if old.get(name) == f.text:
                continue
            (folder / name).write_text(f.text, encoding="utf-8")
            changes.append(FileChange("modified" if name in old else "added", f"{path}/{name}", f.ref))
        return sorted(changes, key=lambda c: c.file)

    def commit(self, path: str, message: str, *, author_name: str, author_email: str) -> str | None:
        """Commit the folder when it changed; the new sha, or None when there was nothing to commit."""
        import git

        try:
            self.repo.git.add("-A", "--", path)
            if not self.repo.git.status("--porcelain", "--", path).strip():
                return None
            who = {"GIT_AUTHOR_NAME": author_name, "GIT_AUTHOR_EMAIL": author_email,
                   "GIT_COMMITTER_NAME": author_name, "GIT_COMMITTER_EMAIL": author_email}
            with self.repo.git.custom_environment(**who):
                self.repo.git.commit("-q", "--no-verify", "-m", message)
        except git.GitCommandError as e:
            raise _git_error(e, "commit", self.url) from None
        return self.repo.head.commit.hexsha

    def push(self) -> str:
        """Push the branch, fast-forward only. PushRejected when the remote moved meanwhile."""
        import git
        from git.remote import PushInfo

        refspec = f"HEAD:refs/heads/{self.branch}"
        try:
            infos = self.repo.remote("origin").push(refspec, kill_after_timeout=self.timeout)
        except git.GitCommandError as e:
            raise _git_error(e, "push", self.url) from None
        bad = PushInfo.ERROR | PushInfo.REJECTED | PushInfo.REMOTE_REJECTED | PushInfo.REMOTE_FAILURE
        failed = [i for i in infos if i.flags & bad] or ([] if infos else [None])
        if failed:
            info = failed[0]
            summary = (info.summary.strip() if info is not None else "") or "no result from git push"
            where = f"{redact_url(self.url)} branch {self.branch}"
            if info is not None and info.flags & PushInfo.REJECTED:
                raise PushRejected(
                    f"push to {where} rejected ({summary}): the branch moved while raibid was writing "
                    f"(someone pushed to the config repo); nothing was pushed",
                    hint="run the command again: it starts from the new head (edits outside the raibid "
                         "folder are kept, edits inside it are replaced)")
            raise PushRejected(f"push to {where} rejected: {summary}; nothing was pushed",
                               hint="check the branch protection of the config repo in Gitea")
        return self.repo.head.commit.hexsha


def _quiet_gitpython() -> None:
    """Keep GitPython's own log lines ("Error lines received while pushing: ...") off stderr.

    raibid reports every git failure as a typed error with a hint; GitPython also logs
    git's raw stderr as a warning, which with no logging configured Python prints to
    stderr as a stray, unprefixed line next to raibid's message.
    """
    log = logging.getLogger("git")
    log.propagate = False
    if not log.handlers:
        log.addHandler(logging.NullHandler())


@contextlib.contextmanager
def checkout(url: str, branch: str, env: dict[str, str], *, timeout: float = 60.0) -> Iterator[Checkout]:
    """A fresh working clone of ``branch`` (empty when the branch does not exist), removed afterwards."""
    import git

    _quiet_gitpython()
    with tempfile.TemporaryDirectory(prefix="raibid-gitops-") as tmp:
        try:
            repo = git.Repo.init(tmp, initial_branch=branch)
        except git.GitCommandError as e:
            raise _git_error(e, "init", url) from None
        try:
            repo.git.update_environment(**env)
            repo.create_remote("origin", url)
            co = Checkout(repo, url, branch, timeout)
            co._fetch()
            yield co
        finally:
            repo.close()
