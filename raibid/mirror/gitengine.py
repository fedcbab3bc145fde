"""The git side of a mirror: reading refs, the bare-repo cache, pushing with prune semantics.

Reading a remote's refs is one HTTP request (the smart-HTTP ref advertisement,
``GET info/refs?service=git-upload-pack``) parsed here, not a ``git ls-remote``
process: the unchanged fast path costs two requests per repository and no
process at all. Other URL schemes fall back to ``git ls-remote``.

Branches and tags are mirrored (``refs/heads/*``, ``refs/tags/*``); of GitHub's
``refs/pull/*`` only the heads of open pull requests, one named ref each
(:func:`fetch_pull_heads`), never the ``merge`` refs or closed PRs' heads. Tokens reach git only through
:func:`raibid.gitcreds.git_env`; git's messages pass through
:func:`raibid.gitcreds.scrub` before they go anywhere. Every URL and ref comes after
``--end-of-options``: a URL from an API answer (``clone_url``) that starts with ``-``
(``--upload-pack=...``) is a repository name to git, never an option.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from raibid.errors import RaibidError
from raibid.gitcreds import auth_header, git_env, scrub

MIRRORED = ("refs/heads/", "refs/tags/")
_PULL_HEAD = re.compile(r"refs/pull/[1-9][0-9]{0,9}/head")
ZERO = "0" * 40
_local = threading.local()


class GitFailed(RaibidError):
    """A git command or a ref advertisement failed; the message is already scrubbed."""


class SourceGone(GitFailed):
    """The remote repository does not exist (404)."""


class RemoteUnreachable(GitFailed):
    """The git server could not be connected to (or did not answer in time)."""


@dataclass
class Remote:
    """A repository URL and the token for its host (never shown, never in argv)."""

    url: str
    token: str | None = None

    def env(self) -> dict[str, str]:
        return git_env({self.url: self.token})


def mirrored(refs: dict[str, str], branches: re.Pattern[str] | None = None) -> dict[str, str]:
    """The refs a mirror carries: every tag, and the branches whose name matches ``branches``."""
    out = {}
    for ref, sha in refs.items():
        if ref.endswith("^{}") or not ref.startswith(MIRRORED):
            continue
        if branches is not None and ref.startswith("refs/heads/") and not branches.search(ref[11:]):
            continue
        out[ref] = sha
    return out


def _deadline_left(deadline: float | None, default: float = 300.0) -> float:
    if deadline is None:
        return default
    left = deadline - time.monotonic()
    if left <= 0:
        raise GitFailed("timed out")
    return left


# ----------------------------------------------------------------------------- reading refs


def _session():  # noqa: ANN202 - requests is imported lazily
    s = getattr(_local, "session", None)
    if s is None:
        import requests

        s = _local.session = requests.Session()
        s.headers["User-Agent"] = "git/2.40 (raibid)"
    return s


def parse_advertisement(data: bytes) -> dict[str, str]:
    """Refs from a smart-HTTP v0 ``git-upload-pack`` advertisement (pkt-lines)."""
    refs: dict[str, str] = {}
    i = 0
    while i + 4 <= len(data):
        try:
            n = int(data[i:i + 4], 16)
        except ValueError:
            raise GitFailed("not a git ref advertisement") from None
        if n == 0:
            i += 4
            continue
        line = data[i + 4:i + n].rstrip(b"\n")
        i += n
        if line.startswith(b"#"):
            continue
        line = line.split(b"\0", 1)[0]
        sha, _, ref = line.decode("utf-8", "replace").partition(" ")
        if ref and ref != "capabilities^{}" and len(sha) == 40:
            refs[ref] = sha
    return refs


def ls_remote(remote: Remote, *, timeout: float = 30.0, deadline: float | None = None) -> dict[str, str]:
    """Every ref of a remote: ``{"refs/heads/main": sha, ...}``."""
    if not remote.url.startswith(("http://", "https://")):
        out = run_git(["ls-remote", "--end-of-options", remote.url], remote=remote, deadline=deadline)
        refs = {}
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            if ref:
                refs[ref] = sha
        return refs
    import requests

    url = remote.url.rstrip("/")
    headers = {"Git-Protocol": "version=0"}
    if remote.token:
        headers["Authorization"] = auth_header(remote.token).split(": ", 1)[1]
    try:
        resp = _session().get(f"{url}/info/refs", params={"service": "git-upload-pack"}, headers=headers,
                              timeout=min(timeout, _deadline_left(deadline)))
    except (requests.ConnectionError, requests.Timeout) as e:
        kind = "timed out" if isinstance(e, requests.Timeout) else "connection failed"
        raise RemoteUnreachable(f"cannot read refs of {scrub(url)}: {kind}") from None
    if resp.status_code == 404:
        raise SourceGone(f"{scrub(url)}: repository not found")
    if resp.status_code in (401, 403):
        raise GitFailed(f"{scrub(url)}: access denied ({resp.status_code}); check the token")
    if resp.status_code >= 400:
        raise GitFailed(f"{scrub(url)}: HTTP {resp.status_code} reading refs")
    if "x-git-upload-pack-advertisement" not in resp.headers.get("Content-Type", ""):
        out = run_git(["ls-remote", "--end-of-options", url], remote=remote, deadline=deadline)  # a dumb server: let git cope
        return {ref: sha for sha, _, ref in (line.partition("\t") for line in out.splitlines()) if ref}
    return parse_advertisement(resp.content)


# ----------------------------------------------------------------------------- running git


def run_git(args: list[str], *, remote: Remote | None = None, cwd: Path | None = None,
            deadline: float | None = None, secrets: tuple[str | None, ...] = ()) -> str:
    """Run git with credentials in the env only; a failure raises :class:`GitFailed` with a scrubbed message."""
    env = remote.env() if remote else git_env()
    hidden = (remote.token if remote else None, *secrets)
    verb = args[2] if args[:1] == ["--git-dir"] and len(args) > 2 else args[0]
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=_deadline_left(deadline), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise GitFailed(f"git {verb} timed out") from None
    except FileNotFoundError:
        raise GitFailed("git is not installed (or not on PATH)") from None
    if proc.returncode != 0:
        text = scrub((proc.stderr or proc.stdout or "").strip(), hidden)
        last = [line for line in text.splitlines() if line.strip()][-3:]
        raise GitFailed(f"git {verb} failed: " + (" | ".join(last) or _silent_exit(proc.returncode)))
    return proc.stdout


def _silent_exit(code: int) -> str:
    """Why git failed when it said nothing: the signal that ended it (Ctrl-C, a kill) or its exit code."""
    import signal

    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"git was stopped by {name} (interrupted or killed); the next run syncs the repo again"
    return f"git exited with code {code} and printed nothing"


# ----------------------------------------------------------------------------- the cache


def cache_path(cache_dir: Path, source_url: str, source: str) -> Path:
    """``<cache>/repos/<host>/<owner>/<name>.git``: one bare repo per source, named without credentials."""
    from urllib.parse import urlsplit

    host = re.sub(r"[^A-Za-z0-9_.-]", "_", (urlsplit(source_url).netloc.rsplit("@", 1)[-1]) or "local")
    owner, _, name = source.lower().partition("/")
    return cache_dir / "repos" / host / owner / f"{name}.git"


class RepoBusy(GitFailed):
    """Another process (a cron sync, the webhook receiver) held the repo's cache lock until the deadline."""


@contextmanager
def repo_lock(path: Path, *, deadline: float | None = None, poll: float = 0.05) -> Iterator[None]:
    """Exclusive use of one cache repo (``<name>.git.lock`` beside it, ``fcntl.flock``) across processes.

    The run lock (``mirror.lock``) keeps two cron syncs apart, but the webhook receiver
    syncs single repos without it; two git fetches into one bare repo fail with
    "cannot lock ref". So each repo's read-fetch-push is serialised: the second waits
    (until ``deadline``), then finds the work done. The kernel releases the lock when
    its holder dies.
    """
    import fcntl

    lock = path.with_name(path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise RepoBusy("another sync (a cron run or the webhook receiver) kept this repo busy until "
                                   "the timeout; the next run syncs it") from None
                time.sleep(poll)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def fetch(path: Path, source: Remote, *, deadline: float | None = None) -> bool:
    """Bring the cache repo up to date with the source (created on first use); True when it was created.

    The first time is the equivalent of ``git clone --mirror`` restricted to
    branches and tags: ``init --bare`` into a temporary directory, renamed into
    place only once the first fetch succeeded, so an interrupted first sync
    leaves nothing half-made (and what a killed one left is removed the next
    time). After that, ``fetch --prune``. Callers hold :func:`repo_lock`.
    """
    refspecs = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]
    _remove_leftovers(path)
    if (path / "HEAD").exists():
        run_git(["--git-dir", str(path), "fetch", "--prune", "--quiet", "--no-write-fetch-head", "--end-of-options",
                 source.url, *refspecs], remote=source, deadline=deadline)
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        run_git(["init", "--bare", "--quiet", str(tmp)], deadline=deadline)
        # The URL is stored for humans (no credentials in it); fetches name it explicitly.
        run_git(["--git-dir", str(tmp), "config", "--end-of-options", "remote.origin.url", source.url],
                deadline=deadline)
        run_git(["--git-dir", str(tmp), "fetch", "--prune", "--quiet", "--no-write-fetch-head", "--end-of-options",
                 source.url, *refspecs], remote=source, deadline=deadline)
        try:
            os.rename(tmp, path)
        except OSError:  # another process made it first: theirs is as good
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return True


def _remove_leftovers(path: Path) -> None:
    """Temporary dirs of first fetches whose process was killed (SIGTERM, SIGKILL: no cleanup ran).

    Only called under :func:`repo_lock`, so no other process is using one of them.
    """
    if not path.parent.is_dir():
        return
    mine = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}")  # tempfile.mkdtemp(prefix=".<name>.")
    for old in path.parent.iterdir():
        if mine.fullmatch(old.name) and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


def fetch_pull_heads(path: Path, source: Remote, refs: list[str], *,
                     deadline: float | None = None) -> dict[str, str]:
    """Fetch the named ``refs/pull/<n>/head`` refs into the cache (no prune); their local shas.

    Callers hold :func:`repo_lock`; the cache exists (fetched first). Refs are checked here,
    since they become refspecs."""
    for ref in refs:
        if not _PULL_HEAD.fullmatch(ref):
            raise GitFailed(f"not a pull request head ref: {ref!r}")
    if not refs:
        return {}
    specs = [f"+{ref}:{ref}" for ref in refs]
    for i in range(0, len(specs), 500):
        run_git(["--git-dir", str(path), "fetch", "--quiet", "--no-write-fetch-head", "--no-tags",
                 "--end-of-options", source.url, *specs[i:i + 500]], remote=source, deadline=deadline)
    out = run_git(["--git-dir", str(path), "for-each-ref", "--format=%(refname) %(objectname)", "refs/pull"])
    wanted = set(refs)
    return {ref: sha for ref, sha in (line.split(" ", 1) for line in out.splitlines() if line) if ref in wanted}


def local_refs(path: Path) -> dict[str, str]:
    out = run_git(["--git-dir", str(path), "for-each-ref", "--format=%(refname) %(objectname)",
                   "refs/heads", "refs/tags"])
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def has_object(path: Path, sha: str) -> bool:
    if not (path / "HEAD").exists():
        return False
    return subprocess.run(["git", "--git-dir", str(path), "cat-file", "-e", f"{sha}^{{commit}}"],
                          capture_output=True, env=git_env(), stdin=subprocess.DEVNULL).returncode == 0


def changes(want: dict[str, str], have: dict[str, str]) -> dict[str, tuple[str | None, str | None]]:
    """ref -> (old, new) for every ref that must move on the target; ``new`` None deletes it."""
    out: dict[str, tuple[str | None, str | None]] = {}
    for ref, sha in want.items():
        if have.get(ref) != sha:
            out[ref] = (have.get(ref), sha)
    for ref, sha in have.items():
        if ref not in want:
            out[ref] = (sha, None)
    return out


def push(path: Path, target: Remote, moves: dict[str, tuple[str | None, str | None]], *,
         deadline: float | None = None) -> None:
    """Force-push the moves (updates and deletions) with explicit refspecs, so the target equals the source."""
    if not moves:
        return
    specs = [f"+{new}:{ref}" if new else f":{ref}" for ref, (_, new) in sorted(moves.items())]
    for i in range(0, len(specs), 500):  # keep argv well below ARG_MAX on repos with many tags
        run_git(["--git-dir", str(path), "push", "--quiet", "--no-verify", "--end-of-options", target.url,
                 *specs[i:i + 500]], remote=target, deadline=deadline)


# ----------------------------------------------------------------------------- reading a commit (no checkout)



@dataclass
class FileAt:
    """A file of a commit, read from the bare cache: a regular file's bytes, or what else the path is."""

    kind: str  # "file", "symlink", "dir", "submodule"
    data: bytes | None = None  # a file's content (None when it is larger than the limit asked for)
    size: int = 0


def peel(path: Path, sha: str) -> str:
    """The commit a ref's object is (an annotated tag's target; a commit is itself)."""
    return run_git(["--git-dir", str(path), "rev-parse", "--verify", "--quiet", "--end-of-options",
                    f"{sha}^{{commit}}"]).strip()


def read_file_at(path: Path, commit: str, name: str, *, max_bytes: int) -> FileAt | None:
    """``name`` at ``commit`` in the bare repo ``path`` (``git ls-tree`` then ``git cat-file blob``):
    None when the commit has no such path. Two git processes, and only for a commit being planned."""
    out = run_git(["--git-dir", str(path), "ls-tree", "-l", "--full-tree", "--end-of-options", commit, "--",
                   name])
    line = out.splitlines()[0] if out else ""
    if not line:
        return None
    meta, _, _ = line.partition("\t")
    mode, otype, oid, size = (meta.split() + ["", "", "", ""])[:4]
    if otype == "tree":
        return FileAt("dir")
    if otype == "commit":
        return FileAt("submodule")
    if mode == "120000":
        return FileAt("symlink")
    n = int(size) if size.isdigit() else 0
    if n > max_bytes:
        return FileAt("file", None, n)
    blob = subprocess.run(["git", "--git-dir", str(path), "cat-file", "blob", oid], capture_output=True,
                          env=git_env(), stdin=subprocess.DEVNULL, timeout=60)
    if blob.returncode != 0:
        raise GitFailed(f"git cat-file failed reading {name} at {commit[:12]}")
    return FileAt("file", blob.stdout, n)


def changed_files(path: Path, before: str | None, after: str, *, limit: int = 2000) -> tuple[str, ...] | None:
    """Files that differ between the trees of ``before`` and ``after`` (``git diff --name-only``,
    renames as a delete plus an add), or None when that cannot be told: no ``before`` (a new
    branch), ``before`` not in the cache, or more than ``limit`` files. A force push compares the two
    tips' trees, which is what changed on the branch."""
    if not before or set(before) == {"0"} or not has_object(path, before):
        return None
    out = run_git(["--git-dir", str(path), "-c", "core.quotePath=false", "diff", "--name-only", "--no-renames",
                   "-z", "--end-of-options", before, after, "--"])
    files = tuple(f for f in out.split("\0") if f)
    return None if len(files) > limit else files
