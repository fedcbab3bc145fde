"""`raibid status REPO[@REF|SHA]`: a commit's checks, from Redis, as `gh pr checks` lists them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from raibid.cli._common import json_option, pass_app
from raibid.errors import Exit, ExitCode, NotFound, UsageError

if TYPE_CHECKING:
    from raibid.app import Application

COLUMNS = ("check", "state", "description", "job", "gitea", "github", "age")
SCAN = 5000  # newest jobs looked through to resolve a ref or a short sha


@click.command()
@click.argument("target", metavar="REPO[@REF|SHA]")
@json_option
@pass_app
def status(app: Application, target: str, as_json: bool) -> None:
    """List the checks of a commit, from Redis (no forge is asked).

    REPO is the Gitea OWNER/NAME. After @: a full or short sha, or a ref (branch, tag or
    refs/...) resolved through the jobs' refs to the newest commit built for it; without
    @, the commit of the newest job of REPO. Each check is its context's newest attempt,
    with what was posted to Gitea and GitHub. Exit 0 when every check passed, 1 when one
    failed or errored, 8 while one is pending, 3 when the commit has no checks.
    """
    from dataclasses import asdict

    from raibid.queue.model import REPO_RE
    from raibid.terminal import age_of
    from raibid.webhook.reporter import commit_checks

    repo, _, want = target.partition("@")
    if not REPO_RE.fullmatch(repo):
        raise UsageError(f"invalid repo {repo!r}: expected OWNER/NAME[@REF|SHA]")
    q = app.queue
    commit, ref = _resolve(q, repo, want)
    checks = commit_checks(q.r, q.keys, repo, commit)
    data = {"repo": repo, "commit": commit, "ref": ref, "checks": [asdict(c) for c in checks]}

    def table() -> None:
        rows = [(c.context, c.state, c.description, c.job or "", _forge(c.forges, "gitea"),
                 _forge(c.forges, "github"), age_of(c.at)) for c in checks]
        app.term.table(COLUMNS, rows, title=f"{repo}@{commit[:12]}")

    app.term.emit(data, as_json, table)
    if not checks:
        raise Exit(ExitCode.NOT_FOUND)
    states = {c.state for c in checks}
    if states & {"failure", "error"}:
        raise Exit(ExitCode.FAILURE)
    if "pending" in states:
        raise Exit(ExitCode.PENDING)


def _forge(forges: dict, name: str) -> str:
    got = forges.get(name) or {}
    return str(got.get("result") or "-")


def _resolve(q, repo: str, want: str) -> tuple[str, str | None]:
    """(commit, the ref it was found by): a full sha as it is; a short sha, a ref or nothing through the jobs."""
    import re

    if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", want):
        return want, None
    short = re.fullmatch(r"[0-9a-f]{7,39}", want) is not None
    refs = {want, f"refs/heads/{want}", f"refs/tags/{want}"} if want else set()
    for job in q.list(limit=SCAN):  # newest first
        if job.repo.lower() != repo.lower() or not job.commit:
            continue
        if not want or (short and job.commit.startswith(want)) or job.ref in refs or job.head_ref in refs:
            return job.commit, (job.ref if want and not short else None)
    what = f"{repo}@{want}" if want else repo
    raise NotFound(f"no job of {what} among the newest {SCAN}: no commit to list checks for",
                   hint="give the full sha (REPO@SHA), or check the name with `raibid queue list`")
