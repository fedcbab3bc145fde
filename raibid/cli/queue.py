"""`raibid queue`: submit, inspect and manage CI jobs on Redis Streams."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import click

from raibid.cli._common import confirm_or_refuse, json_option, pass_app
from raibid.errors import UsageError

if TYPE_CHECKING:
    from raibid.app import Application
    from raibid.queue import Job, JobSpec


@click.group()
def queue() -> None:
    """Submit, inspect and manage CI jobs on Redis Streams."""


def _job_rows(jobs: list[Job]) -> list[tuple]:
    from raibid.terminal import age_of

    return [(j.id, "malformed" if j.malformed else j.status, j.agent, j.repo, j.ref, j.attempt, age_of(j.submitted_at),
             "" if j.exit_code is None else j.exit_code) for j in jobs]


JOB_COLUMNS = ["id", "status", "agent", "repo", "ref", "attempt", "age", "exit"]


@queue.command("init")
@click.option("--agent", "agents", multiple=True, metavar="TYPE",
              help="Agent type (repeatable): both its pools, TYPE and TYPE-untrusted. "
                   "Default: every agent pool (see `raibid agents types`).")
@json_option
@pass_app
def init(app: Application, agents: tuple[str, ...], as_json: bool) -> None:
    """Create each agent stream and its consumer group (idempotent): two per type, trusted and untrusted."""
    from raibid.agents.trust import pool_name, split_pool

    wanted = (sorted({pool_name(split_pool(a)[0], trusted) for a in agents for trusted in (True, False)})
              if agents else sorted(app.agent_pools()))
    created = app.queue.init(wanted)
    data = [{"agent": a, "stream": app.queue.keys.stream(a), "created": a in created} for a in wanted]
    app.term.emit(data, as_json, lambda: app.term.table(
        ["agent", "stream", "group"], [(d["agent"], d["stream"], "created" if d["created"] else "exists")
                                       for d in data]))


def _parse_env(pairs: tuple[str, ...]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"invalid --env {pair!r}: expected KEY=VALUE")
        env[key] = value
    return env


SPEC_KEYS = {"repo", "ref", "commit", "agent", "command", "env", "timeout", "dedupe"}
SPEC_REQUIRED = {"repo", "ref"}


def _read_jsonl(stream: Iterable[str | bytes], name: str) -> list[JobSpec]:
    import json

    from raibid.queue import JobSpec

    specs = []
    for n, raw in enumerate(stream, start=1):
        try:
            line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError:
            raise UsageError(f"{name}:{n}: not UTF-8 text; nothing was submitted") from None
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:  # JSONDecodeError, or a plain ValueError (an integer of over 4300 digits)
            why = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
            raise UsageError(f"{name}:{n}: malformed JSON ({why}); nothing was submitted") from None
        if not isinstance(obj, dict):
            raise UsageError(f"{name}:{n}: each line must be a JSON object; nothing was submitted")
        unknown = set(obj) - SPEC_KEYS
        if unknown:
            raise UsageError(f"{name}:{n}: unknown key(s) {', '.join(sorted(unknown))}; nothing was submitted",
                             hint="keys: " + ", ".join(sorted(SPEC_KEYS)))
        missing = SPEC_REQUIRED - set(obj)
        if missing:
            raise UsageError(f"{name}:{n}: missing key(s) {', '.join(sorted(missing))}; nothing was submitted",
                             hint="each line needs " + " and ".join(sorted(SPEC_REQUIRED)))
        try:
            spec = JobSpec(**{k: obj[k] for k in obj}, source="cli")
            spec.validate()
        except (TypeError, UsageError) as e:
            raise UsageError(f"{name}:{n}: {e}; nothing was submitted") from None
        specs.append(spec)
    return specs


TRUST_HINT = ("to trust a repo, add its owner to agents.trusted.owners or a regex of it to agents.trusted.repos "
              "(docs/security.md)")


def _route(app: Application, specs: list) -> None:
    """Give each spec its pool, ``route(type, repo, agents.trusted)``; the pool is what the job names.

    The type is the spec's ``agent`` (a pool name counts as its type) or ``agents.default_type``.
    Says on stderr when ``agent`` asked for a trusted pool and the repo is not trusted.
    """
    from raibid.agents.trust import route, split_pool

    policy = app.trust_policy
    demoted: dict[str, set[str]] = {}
    for spec in specs:
        asked = spec.agent
        spec.agent = route(asked or app.cfg.agents.default_type, spec.repo, policy)
        if asked and spec.agent != asked and split_pool(asked)[1]:
            demoted.setdefault(spec.agent, set()).add(spec.repo)
    for pool, repos in sorted(demoted.items()):
        shown = ", ".join(sorted(repos)[:5]) + (f" and {len(repos) - 5} more" if len(repos) > 5 else "")
        app.term.warn(f"{shown} {'is' if len(repos) == 1 else 'are'} not in agents.trusted: the job goes to the "
                      f"untrusted pool {pool} (no job secrets, its own cache); {TRUST_HINT}")


@queue.command()
@click.option("--repo", metavar="OWNER/NAME", help="Gitea repository.")
@click.option("--ref", metavar="REF", help="Branch, tag or sha to build.")
@click.option("--commit", metavar="SHA", help="Exact commit (optional).")
@click.option("--agent", metavar="TYPE",
              help="Agent type (default: agents.default_type). The pool is TYPE for a repo in agents.trusted, "
                   "TYPE-untrusted for any other.")
@click.option("--command", "command_", metavar="CMD", help="Command to run instead of the repo's .raibid.yml.")
@click.option("--env", "env_pairs", multiple=True, metavar="K=V", help="Non-secret env var (repeatable).")
@click.option("--timeout", type=click.IntRange(min=1), metavar="S", help="Timeout in seconds.")
@click.option("--dedupe", metavar="KEY",
              help="Submit at most one job per KEY within queue.dedupe_ttl (e.g. OWNER/NAME@SHA:AGENT); "
                   "a duplicate prints the earlier job.")
@click.option("--from-file", "from_file", type=click.File("rb"), metavar="FILE|-",
              help="Submit many jobs from JSON Lines (one object per line), pipelined.")
@json_option
@pass_app
def submit(app: Application, repo: str | None, ref: str | None, commit: str | None, agent: str | None,
           command_: str | None, env_pairs: tuple[str, ...], timeout: int | None, dedupe: str | None, from_file,
           as_json: bool) -> None:
    """Queue a job (or many with --from-file) and print the job id; the pool goes to stderr.

    The pool (the job's `agent`) is the type's for a repo in agents.trusted and
    `<type>-untrusted` for any other, whatever --agent says. With --dedupe (or a
    "dedupe" field per line) a key already used within queue.dedupe_ttl submits
    nothing and prints the earlier job's id.
    """
    from raibid.queue import JobSpec, PartialSubmit
    from raibid.terminal import to_plain

    q = app.queue
    if from_file is not None:
        if repo or ref or dedupe:
            raise UsageError("--from-file cannot be combined with --repo/--ref/--dedupe")
        specs = _read_jsonl(from_file, getattr(from_file, "name", "-"))
        _route(app, specs)
        try:
            results = q.submit_many_deduped(specs)
        except PartialSubmit as e:
            for job_id in e.done:  # stdout: what is certainly queued
                app.term.line(job_id)
            e.hint = ("the ids printed are queued; for the rest check `raibid queue list`, or give each line a "
                      '"dedupe" key, so that submitting the file again skips the jobs already in')
            raise
    else:
        if not repo or not ref:
            raise UsageError("--repo and --ref are required (or use --from-file)")
        spec = JobSpec(repo=repo, ref=ref, commit=commit, agent=agent, command=command_, env=_parse_env(env_pairs),
                       timeout=timeout, dedupe=dedupe)
        spec.validate()  # before routing, so a bad --agent is named as given
        _route(app, [spec])
        results = [q.submit_deduped(spec)]
    data = [{**to_plain(j), "duplicate": not created} for j, created in results]
    if as_json:
        app.term.json(data[0] if from_file is None else data)
    else:
        for j, _ in results:
            app.term.line(j.id)
    dups = [j for j, created in results if not created]
    for j in dups[:20]:
        app.term.info(f"duplicate: dedupe key {j.dedupe!r} already has job {j.id} ({j.status}); nothing submitted")
    if len(dups) > 20:
        app.term.info(f"... and {len(dups) - 20} more duplicates")
    if from_file is not None:
        pools: dict[str, int] = {}
        for j, created in results:
            if created:
                pools[j.agent] = pools.get(j.agent, 0) + 1
        by_pool = ", ".join(f"{pool} {n}" for pool, n in sorted(pools.items()))
        app.term.info(f"submitted {len(results) - len(dups)} jobs" + (f", {len(dups)} duplicates" if dups else "")
                      + (f"; by pool: {by_pool}" if by_pool else ""))
    elif not dups:
        app.term.info(f"queued on pool {results[0][0].agent}")


@queue.command("list")
@click.option("--status", type=click.Choice(["waiting-approval", "queued", "running", "succeeded", "failed",
                                             "cancelled", "dead"]))
@click.option("--agent", metavar="TYPE")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
@pass_app
def list_(app: Application, status: str | None, agent: str | None, limit: int, as_json: bool) -> None:
    """Recent jobs, newest first."""
    jobs = app.queue.list(status=status, agent=agent, limit=limit)
    for j in jobs:
        if j.malformed:
            app.term.warn(f"job {j.id or '?'}: malformed record ({j.malformed})")
    app.term.emit(jobs, as_json, lambda: app.term.table(JOB_COLUMNS, _job_rows(jobs)))


@queue.command()
@click.argument("job_id")
@json_option
@pass_app
def show(app: Application, job_id: str, as_json: bool) -> None:
    """One job's full record, and the commit statuses posted for it (where, and the commit's URL)."""
    from raibid.terminal import to_plain
    from raibid.webhook.reporter import job_statuses

    q = app.queue
    job = q.get(job_id)
    if job.malformed:
        app.term.warn(f"job {job_id}: malformed record ({job.malformed})")
    posted = job_statuses(q.r, q.keys, job_id)

    def render() -> None:
        app.term.record(job)
        for url in dict.fromkeys(p.url for p in posted if p.url):
            app.term.record({"status_url": url})
        for p in posted:
            app.term.record({f"status {p.forge}": f"{p.state} \"{p.description}\" ({p.context}): {p.result}, {p.at}"})

    app.term.emit({**to_plain(job), "commit_statuses": to_plain(posted)}, as_json, render)


@queue.command()
@click.argument("job_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job finishes.")
@click.option("--raw", is_flag=True,
              help="Print the lines exactly as stored, terminal control sequences included (default: shown escaped).")
@json_option
@pass_app
def logs(app: Application, job_id: str, follow: bool, raw: bool, as_json: bool) -> None:
    """Print a job's log lines (stdout), optionally following them.

    A build writes its log: control and escape sequences in it (colours, cursor
    moves, OSC 8 links, OSC 52 clipboard writes) are shown escaped, as \\x1b...,
    unless --raw. With --json: one JSON object per line ({"id", "line"}), the
    exact text, so --follow streams too.
    """
    import json

    from raibid.queue import TERMINAL

    if raw and as_json:
        raise UsageError("--raw and --json cannot be combined (JSON is always the exact text)")
    q = app.queue
    job = q.get(job_id)

    def out(eid: str, line: str) -> None:
        if as_json:
            app.term.line(json.dumps({"id": eid, "line": line}))  # ensure_ascii: every control is \uXXXX
        elif raw:
            app.term.raw(line)
        else:
            app.term.line(line)

    if job.log_trimmed:
        app.term.warn(f"the log of job {job_id} was deleted to keep Redis under its maxmemory "
                      "(queue.log_high_water): newer jobs' logs needed the room")
    last = "-"
    for eid, line in q.logs(job_id):
        out(eid, line)
        last = eid
    if not follow:
        return
    last = last if last != "-" else "0-0"
    while True:
        lines = q.wait_logs(job_id, last, block_ms=1000)
        for eid, line in lines:
            out(eid, line)
            last = eid
        app.term.stdout.flush()
        if not lines:
            job = q.get(job_id)
            if job.status in TERMINAL:
                # Drain anything written between the read and the status check.
                for eid, line in q.logs(job_id, after=last):
                    out(eid, line)
                break
    app.term.info(f"job {job.id} {job.status}" + (f" (exit {job.exit_code})" if job.exit_code is not None else ""))


@queue.command()
@json_option
@pass_app
def stats(app: Application, as_json: bool) -> None:
    """Per agent stream: length, lag, pending, consumers, oldest queued job, DLQ, and what KEDA will do."""
    from raibid.terminal import format_age

    s = app.queue.stats(app.agent_pools())
    for w in s.warnings:
        app.term.warn(w)

    def render() -> None:
        rows = []
        for st in s.streams:
            consumers = ", ".join(f"{c.name}({c.pending}, idle {c.idle_ms // 1000}s)" for c in st.consumers)
            age = format_age(st.oldest_queued_age_s)
            keda = "" if st.keda_desired is None else f"{st.keda_desired}/{st.max_replicas}"
            rows.append((st.agent, st.length, "n/a" if st.lag is None else st.lag, st.pending, age,
                         keda, consumers or "-"))
        app.term.table(["agent", "length", "lag", "pending", "oldest queued", "keda pods", "consumers"], rows)
        app.term.info(f"dead-letter queue: {s.dead_letter}")

    app.term.emit(s, as_json, render)


@queue.command()
@click.argument("job_id")
@pass_app
def cancel(app: Application, job_id: str) -> None:
    """Cancel a queued job, or ask a running one to stop."""
    res = app.queue.cancel(job_id)
    app.term.success(f"job {job_id} cancelled" if res == "cancelled"
                     else f"cancel requested for running job {job_id}; its agent stops at the next heartbeat")


@queue.command()
@click.argument("job_id")
@json_option
@pass_app
def approve(app: Application, job_id: str, as_json: bool) -> None:
    """Let a job waiting for approval (a fork pull request, agents.approval) run: it is queued now.

    Exit 0 when queued; 2 when the job is not waiting-approval; 3 for an unknown job.
    """
    job = app.queue.approve(job_id)
    app.term.json(job) if as_json else app.term.line(job.id)
    app.term.info(f"job {job.id} approved: queued on pool {job.agent}")


@queue.command()
@click.argument("job_id")
@json_option
@pass_app
def retry(app: Application, job_id: str, as_json: bool) -> None:
    """Enqueue a failed, dead or cancelled job again as a new attempt; prints the new id.

    The new attempt's pool is decided again from today's agents.trusted.
    """
    job = app.queue.retry(job_id, trust=app.trust_policy)
    app.term.json(job) if as_json else app.term.line(job.id)
    _say_pool(app, job)


def _say_pool(app: Application, job: Job) -> None:
    """stderr: the pool a retry went to, and why when it is the untrusted one."""
    from raibid.agents.trust import split_pool

    if split_pool(job.agent)[1]:
        app.term.info(f"queued on pool {job.agent}")
    else:
        app.term.info(f"queued on pool {job.agent}: {job.repo} is not in agents.trusted; {TRUST_HINT}")


@queue.group()
def dlq() -> None:
    """The dead-letter queue: jobs delivered max_deliveries times without finishing."""


@dlq.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@json_option
@pass_app
def dlq_list(app: Application, limit: int, as_json: bool) -> None:
    """Dead-lettered jobs, newest first, with the reason."""
    items = app.queue.dlq_list(limit)
    app.term.emit(items, as_json, lambda: app.term.table(
        ["job", "reason", "stream", "at"], [(d.job_id, d.reason, d.stream, d.at) for d in items]))


@dlq.command("retry")
@click.argument("job_id")
@pass_app
def dlq_retry(app: Application, job_id: str) -> None:
    """Retry a dead-lettered job as a new attempt and remove it from the DLQ.

    The new attempt's pool is decided again from today's agents.trusted.
    """
    job = app.queue.dlq_retry(job_id, trust=app.trust_policy)
    app.term.line(job.id)
    _say_pool(app, job)


@dlq.command("purge")
@click.option("--yes", is_flag=True, help="Do not ask.")
@pass_app
def dlq_purge(app: Application, yes: bool) -> None:
    """Empty the dead-letter queue (job records stay, with status dead)."""
    confirm_or_refuse(app.term, "empty the dead-letter queue", yes)
    n = app.queue.dlq_purge()
    app.term.success(f"removed {n} dead-letter entries")


@queue.command()
@click.option("--min-idle", type=click.FloatRange(min=0), metavar="S",
              help="Idle seconds (decimals allowed) before an entry counts as stale (default: queue.min_idle).")
@json_option
@pass_app
def reap(app: Application, min_idle: float | None, as_json: bool) -> None:
    """Requeue or dead-letter entries whose agent stopped heartbeating. Safe from cron.

    Also makes each group's lag (what KEDA scales on) true, deletes idle consumers that
    hold nothing, and drops finished jobs older than queue.retention.
    """
    res = app.queue.reap(app.agent_pools(), min_idle_ms=None if min_idle is None else int(min_idle * 1000))
    if as_json:
        app.term.json(res)
        return
    app.term.info(f"requeued {len(res.requeued)}, dead-lettered {len(res.dead_lettered)}, "
                  f"acked {len(res.acked_jobs)} jobs and {len(res.acked_entries)} entries without a job, "
                  f"left {len(res.skipped)} to live workers, deleted {len(res.consumers_deleted)} idle consumers, "
                  f"expired {res.expired} finished jobs")
    for agent in res.lag_repaired:
        app.term.warn(f"{agent}: the lag KEDA reads was wrong; repaired")
    for job_id in res.requeued:
        app.term.line(f"requeued\t{job_id}")
    for job_id in res.dead_lettered:
        app.term.line(f"dead\t{job_id}")


@queue.command()
@click.option("--yes", is_flag=True, help="Do not ask (required when stdin is not a terminal).")
@pass_app
def purge(app: Application, yes: bool) -> None:
    """Delete every job, stream, log and the DLQ under redis.prefix. Dangerous."""
    q = app.queue
    confirm_or_refuse(app.term, f"delete every key under {q.keys.prefix}: in Redis", yes)
    n = q.purge()
    app.term.success(f"deleted {n} keys")


