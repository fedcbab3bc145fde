"""From the `mirror:` config to the repositories to mirror: single repos, list files and whole orgs.

Org entries are expanded through the GitHub API and filtered by their
include/exclude regexes (searched in the repository name; exclude wins), forks
and archived flags. Repositories that disappeared upstream are found on the
Gitea side: a repo in the entry's target org whose ``original_url`` (pull
mirrors) or ``Mirror of URL`` description (what raibid writes on the repos it
creates) names the org, and which GitHub no longer lists.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from raibid.config.model import MirrorConfig, MirrorOrg, MirrorRepo
from raibid.errors import ConfigError, NotFound, UsageError
from raibid.github.client import Forbidden, GitHubError, RateLimited
from raibid.mirror.model import ListEntry, Resolved

if TYPE_CHECKING:
    from raibid.gitea import Gitea
    from raibid.gitea.models import Repo as GiteaRepo
    from raibid.github import GitHub

# OWNER/NAME; "." and ".." are never names (they would walk out of URLs and the cache dir).
# Used with fullmatch (a "$" at the end would let "acme/app\n" through).
_FULL = re.compile(r"(?!\.\.?/)[A-Za-z0-9_.-]+/(?!\.\.?\Z)[A-Za-z0-9_.-]+")
_MARKER = re.compile(r"^Mirror of (\S+)")


def description_for(url: str) -> str:
    """The description raibid gives a repo it creates: how a later run recognises its mirrors."""
    return f"Mirror of {url}"


def normalize_url(url: str) -> str:
    """A URL compared for adoption: no scheme, userinfo, trailing slash or ``.git``, lower case."""
    u = re.sub(r"^\w+://", "", url.strip()).rsplit("@", 1)[-1].rstrip("/").lower()
    return u[:-4] if u.endswith(".git") else u


def source_of(repo: GiteaRepo) -> str | None:
    """OWNER/NAME a Gitea repo mirrors, from its original_url or raibid's description marker."""
    url = repo.original_url
    if not url:
        m = _MARKER.match(repo.description or "")
        url = m.group(1) if m else ""
    parts = normalize_url(url).split("/") if url else []
    return f"{parts[-2]}/{parts[-1]}" if len(parts) >= 3 else None


def check_full_name(value: str, where: str) -> str:
    if not _FULL.fullmatch(value):
        raise UsageError(f"{where}: {value!r} is not OWNER/NAME")
    return value


class TargetIndex:
    """The Gitea repos of each target org, listed once per run (thread-safe), for lookups and adoption."""

    def __init__(self, gitea: Gitea) -> None:
        self.gitea = gitea
        self._orgs: dict[str, dict[str, GiteaRepo] | None] = {}
        self._lock = threading.Lock()

    def repos(self, org: str) -> dict[str, GiteaRepo] | None:
        """name (lower case) -> repo; None when the org (or user) does not exist."""
        key = org.lower()
        with self._lock:
            if key not in self._orgs:
                try:
                    self._orgs[key] = {r.name.lower(): r for r in self.gitea.list_repos(org)}
                except NotFound:
                    self._orgs[key] = None
            return self._orgs[key]

    def find(self, target: str, urls: Iterable[str]) -> GiteaRepo | None:
        """The repo to use for ``target``: the one of that name, else one whose original_url is the source."""
        org, _, name = target.partition("/")
        repos = self.repos(org) or {}
        found = repos.get(name.lower())
        if found is not None:
            return found
        wanted = {normalize_url(u) for u in urls if u}
        for repo in repos.values():
            if repo.original_url and normalize_url(repo.original_url) in wanted:
                return repo
        return None

    def add(self, repo: GiteaRepo) -> None:
        with self._lock:
            repos = self._orgs.get(repo.owner.lower())
            if repos is None:
                repos = self._orgs[repo.owner.lower()] = {}
            repos[repo.name.lower()] = repo

    def mark_org(self, org: str) -> None:
        """The org now exists (just created), with no repos."""
        with self._lock:
            if self._orgs.get(org.lower()) is None:
                self._orgs[org.lower()] = {}


@dataclass
class _Single:
    entry: str
    source: str
    target: str
    branches: str | None


def read_list(path: Path) -> list[tuple[int, str]]:
    """(line number, OWNER/NAME) from a list file; ``#`` comments and blank lines are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"mirror.lists: cannot read {path}: {e.strerror}") from None
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not _FULL.fullmatch(line):
            raise ConfigError(f"{path}:{n}: {line!r} is not OWNER/NAME")
        out.append((n, line))
    return out


def _org_filter(org: MirrorOrg, name: str) -> bool:
    if org.include and not any(re.search(rx, name) for rx in org.include):
        return False
    return not any(re.search(rx, name) for rx in org.exclude)


def resolve(cfg: MirrorConfig, github: GitHub, targets: TargetIndex | None = None, *,
            repos: tuple[str, ...] = (), orgs: tuple[str, ...] = (), base_dir: Path | None = None,
            jobs: int = 4) -> tuple[list[Resolved], list[ListEntry]]:
    """The repositories to mirror (in config order, one per target) and the entries they came from.

    ``repos``/``orgs`` narrow the run to those sources (an unconfigured one is
    mirrored with the defaults). ``targets`` enables finding repos gone upstream.
    """
    base_dir = base_dir or Path.cwd()
    singles: list[_Single] = []
    entries: list[ListEntry] = []
    org_entries: list[MirrorOrg] = []
    for i, item in enumerate(cfg.repos):
        spec = MirrorRepo(source=item) if isinstance(item, str) else item
        for value in (spec.source, spec.target):
            if value is not None and not _FULL.fullmatch(value):  # "." and "..": the config loader lets them by
                raise ConfigError(f"mirror.repos entry {spec.source!r}: {value!r} is not OWNER/NAME",
                                  hint="'.' and '..' are never owner or repo names")
        name = spec.source.split("/", 1)[1]
        singles.append(_Single(f"repos[{i}]", spec.source, spec.target or f"{cfg.target_org}/{name}", spec.branches))
    for list_file in cfg.lists:
        path = Path(list_file).expanduser()
        path = path if path.is_absolute() else base_dir / path
        for _, source in read_list(path):
            singles.append(_Single(f"lists[{list_file}]", source, f"{cfg.target_org}/{source.split('/', 1)[1]}",
                                   None))
    org_entries = list(cfg.orgs)
    ad_hoc: set[int] = set()  # --org names that are not configured: an org, or else a user

    if repos or orgs:
        wanted = {check_full_name(r, "--repo").lower() for r in repos}
        by_owner = {r.split("/", 1)[0].lower() for r in wanted}
        picked = [s for s in singles if s.source.lower() in wanted]
        known = {s.source.lower() for s in picked}
        org_names = {o.lower() for o in orgs}
        picked_orgs = [o for o in org_entries if o.name.lower() in org_names]
        for org_name in orgs:
            if org_name.lower() not in {p.name.lower() for p in picked_orgs}:
                adhoc = MirrorOrg(name=org_name)
                ad_hoc.add(id(adhoc))
                picked_orgs.append(adhoc)
        # A --repo only an org entry covers: take that org entry's settings for it.
        narrow: dict[str, set[str]] = {}
        for o in org_entries:
            if o.name.lower() in by_owner and o not in picked_orgs:
                names = {r.split("/", 1)[1] for r in wanted if r.split("/", 1)[0] == o.name.lower()
                         and r not in known}
                if names:
                    narrow[o.name.lower()] = names
                    picked_orgs.append(o)
                    known |= {f"{o.name.lower()}/{n}" for n in names}
        for repo_arg in repos:
            if repo_arg.lower() not in known:
                picked.append(_Single("--repo", repo_arg, f"{cfg.target_org}/{repo_arg.split('/', 1)[1]}", None))
        singles, org_entries = picked, picked_orgs
    else:
        narrow = {}

    def look_up(s: _Single) -> Resolved:
        owner, name = s.source.split("/", 1)
        try:
            gh = github.get_repo(owner, name)
        except NotFound:
            return Resolved(s.source, s.target, s.entry, branches=s.branches, error="source not found on GitHub")
        except (RateLimited, GitHubError, Forbidden) as e:  # that repo fails; the others still sync
            return Resolved(s.source, s.target, s.entry, branches=s.branches, error=e.message, unreadable=True)
        return Resolved(gh.full_name, s.target, s.entry, clone_url=gh.clone_url, html_url=gh.html_url,
                        branches=s.branches)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        single_results = list(pool.map(look_up, singles))
    out: list[Resolved] = []
    by_entry: dict[str, ListEntry] = {}
    for s, r in zip(singles, single_results, strict=True):
        out.append(r)
        kind = "repo" if s.entry.startswith(("repos", "--repo")) else "list"
        le = by_entry.get(s.entry) if kind == "list" else None
        if le is None:
            le = ListEntry(entry=s.entry, kind=kind, name=s.source if kind == "repo" else s.entry[6:-1])
            by_entry[s.entry] = le
            entries.append(le)
        le.repos.append({"source": r.source, "target": r.target, **({"error": r.error} if r.error else {})})

    for org in org_entries:
        entry = f"orgs[{org.name}]"
        target_org = org.target_org or cfg.target_org
        le = ListEntry(entry=entry, kind=org.kind, name=org.name)
        entries.append(le)
        try:
            try:
                listed = github.list_repos(org.name, org.kind)
            except NotFound:
                if id(org) not in ad_hoc:
                    raise
                listed = github.list_repos(org.name, "user")
                le.kind = "user"
        except (NotFound, RateLimited, GitHubError, Forbidden) as e:  # that entry fails, nothing is "gone"
            le.error = e.message
            out.append(Resolved(f"{org.name}/*", f"{target_org}/*", entry, error=e.message,
                                unreadable=not isinstance(e, NotFound)))
            continue
        upstream = {r.name.lower() for r in listed}
        only = narrow.get(org.name.lower())
        for gh in listed:
            if only is not None:
                if gh.name.lower() not in only:
                    continue
            elif (gh.fork and not org.forks) or (gh.archived and not org.archived) or not _org_filter(org, gh.name):
                continue
            r = Resolved(gh.full_name, f"{target_org}/{gh.name}", entry, clone_url=gh.clone_url,
                         html_url=gh.html_url, branches=org.branches, on_missing=org.on_missing)
            out.append(r)
            le.repos.append({"source": r.source, "target": r.target})
        if targets is None or only is not None:
            continue
        for repo in (targets.repos(target_org) or {}).values():
            src = source_of(repo)
            if src is None:
                continue
            owner, name = src.split("/", 1)
            if owner == org.name.lower() and name not in upstream and _org_filter(org, repo.name):
                gone = f"{org.name}/{repo.name if repo.name.lower() == name else name}"
                out.append(Resolved(gone, repo.full_name, entry, gone=True, on_missing=org.on_missing))
                le.repos.append({"source": gone, "target": repo.full_name, "gone": "true"})

    seen: set[str] = set()
    unique = []
    for r in out:
        key = r.target.lower()
        if key in seen and not r.target.endswith("/*"):
            continue  # two entries name the same target: the first one wins, never a duplicate mirror
        seen.add(key)
        unique.append(r)
    return unique, entries
