"""`raibid agents`: agent types, their KEDA pools, and the one-job runtime the pods run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from raibid.cli._common import json_option, pass_app
from raibid.errors import Exit

if TYPE_CHECKING:
    from raibid.app import Application


@click.group()
def agents() -> None:
    """Agent types, their KEDA pools, and the agent runtime."""


# ----------------------------------------------------------------------------- runtime


@agents.command("run")
@click.option("--type", "agent_type", metavar="TYPE", envvar="RAIBID_AGENT_TYPE", show_envvar=True,
              help="Agent pool (its stream): a type, or TYPE-untrusted. Default: agents.default_type.")
@click.option("--wait", "wait_s", type=float, metavar="SECONDS",
              help="How long to wait for a job before exiting 0. Default: agents.wait.")
@click.option("--workdir", type=click.Path(file_okay=False), metavar="DIR", envvar="RAIBID_AGENT_WORKDIR",
              show_envvar=True, help="Where the repo is cloned. Default: a temporary directory.")
@click.option("--step-runner", "step_runner", metavar="unix:PATH", envvar="RAIBID_AGENT_STEP_RUNNER",
              show_envvar=True, help="The build container's step runner. Default: a local child process "
              "with a scrubbed environment.")
@click.option("--step-runner-timeout", type=click.FloatRange(min=0), default=300.0, show_default=True,
              metavar="SECONDS", help="How long to wait for --step-runner's socket.")
@click.option("--secrets-dir", type=click.Path(file_okay=False), metavar="DIR", envvar="RAIBID_AGENT_SECRETS_DIR",
              show_envvar=True, default=str(Path("/var/run/raibid/secrets")), show_default=True,
              help="Where job secrets are files named after their agents.secrets entry (trusted pools only).")
@json_option
@pass_app
def run(app: Application, agent_type: str | None, wait_s: float | None, workdir: str | None,
        step_runner: str | None, step_runner_timeout: float, secrets_dir: str, as_json: bool) -> None:
    """Claim one job, clone its repo, run its steps, stream the log, record the result, exit.

    This is what each agent pod's `agent` container runs. Steps run in the step
    runner (--step-runner, or a local child process), never in this process,
    which holds the credentials. Exit codes: 0 the job ran to a result
    (succeeded, failed or cancelled) or none came within --wait; 1 the job was
    taken over by another agent; 5 Redis, Gitea or the step runner unreachable;
    143 SIGTERM (the job was released for redelivery).
    """
    from raibid.agents.steprunner import no_dump, scrub_environ

    no_dump()  # first, before anything reads a secret: /proc/<pid>/environ and mem become root's

    import os
    import shutil
    import tempfile

    from raibid.agents.runtime import AgentSettings, default_consumer, run_agent
    from raibid.agents.trust import TrustPolicy
    from raibid.agents.types import default_registry
    from raibid.errors import UsageError
    from raibid.queue import validate_agent

    cfg = app.cfg
    name = agent_type or cfg.agents.default_type
    validate_agent(name)  # the type's image, env and caches come with the pod; only its stream matters here
    if step_runner is not None and not (step_runner.startswith("unix:") and len(step_runner) > 5):
        raise UsageError(f"--step-runner must be unix:PATH, not {step_runner!r}")
    queue = app.worker_queue
    _, redis_password = app.redis_endpoint()
    token, _ = app.gitea_token()
    # Read once, then gone from the environment: nothing this process starts inherits them, and
    # their values are overwritten where /proc/<pid>/environ shows them (no thread runs yet).
    private = (cfg.redis.password_env, cfg.gitea.token_env, "RAIBID_REDIS_URL")
    scrub_environ(private)
    made = workdir is None
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="raibid-agent-"))
    work.mkdir(parents=True, exist_ok=True)
    a = cfg.agents
    settings = AgentSettings(
        agent=name, consumer=default_consumer(), workdir=work, gitea_url=cfg.gitea.url, token=token,
        wait_s=a.wait if wait_s is None else wait_s, heartbeat_s=float(cfg.queue.heartbeat),
        registry=default_registry(cfg), max_timeout=a.max_timeout, env=dict(os.environ), private_env=private,
        masked=(redis_password,) if redis_password else (), step_runner=step_runner,
        step_runner_timeout=step_runner_timeout, policy=TrustPolicy.from_config(a.trusted),
        job_secrets={s.name: tuple(s.repos) for s in a.secrets}, secrets_dir=Path(secrets_dir),
        push_user=cfg.gitea.ci_user, registry_insecure=not cfg.gitea.url.startswith("https:"),
        max_pids=a.max_pids, log_max_bytes=a.log_max_bytes, log_line_max_bytes=a.log_line_max_bytes)
    try:
        outcome = run_agent(queue, settings, log=app.term.info)
    finally:
        if made:
            shutil.rmtree(work, ignore_errors=True)
    if as_json:
        app.term.json(outcome)
    if outcome.exit != 0:
        raise Exit(outcome.exit)  # type: ignore[arg-type]


@agents.command("step-runner")
@click.option("--socket", "socket_path", type=click.Path(dir_okay=False), required=True, metavar="PATH",
              help="Unix socket to listen on, in a volume shared with the agent container.")
@click.option("--accept-timeout", type=click.FloatRange(min=0), default=600.0, show_default=True,
              metavar="SECONDS", help="Exit 5 when no agent connects within this long.")
def step_runner(socket_path: str, accept_timeout: float) -> None:
    """Run the steps an agent sends over --socket; what the pod's `build` container runs.

    It holds no secret and needs no config: it serves one agent connection and
    exits when the agent hangs up (0), or when none connects in time (5).
    """
    from raibid.agents.steprunner import ProtocolError, no_dump, serve_socket

    no_dump()  # first: the job secrets of the steps it runs pass through this process
    from raibid.errors import Unreachable

    try:
        code = serve_socket(Path(socket_path), accept_timeout=accept_timeout or None)
    except ProtocolError as e:
        raise Unreachable(str(e), hint="the agent container runs `raibid agents run --step-runner "
                          f"unix:{socket_path}`") from None
    except OSError as e:
        raise Unreachable(f"cannot listen on {socket_path}: {e.strerror or e}") from None
    if code:
        raise Exit(code)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- types


@agents.command("types")
@json_option
@pass_app
def types_(app: Application, as_json: bool) -> None:
    """Each agent type with its image, resources, caches and whether it has a pool."""
    from raibid.agents.types import resolve_types

    rows = list(resolve_types(app.cfg).values())
    app.term.emit(rows, as_json, lambda: app.term.table(
        ["type", "pool", "image", "cpu", "memory", "gpu", "max", "lag_count", "caches", "source"],
        [(t.name, "yes" if t.enabled else "no", t.image, f"{t.cpu}/{t.cpu_limit}", f"{t.memory}/{t.memory_limit}",
          t.gpu or "", t.max_replicas, t.lag_count, ",".join(sorted(t.caches)), t.source) for t in rows]))



# ----------------------------------------------------------------------------- pools

type_option = click.option("--type", "types", multiple=True, metavar="TYPE",
                           help="Only this agent type's two pools, or one pool named TYPE-untrusted "
                                "(repeatable). Default: every pool.")
trust_option = click.option("--trust", type=click.Choice(["trusted", "untrusted"]), default=None,
                            help="Only the type's pool at this trust level. Default: both pools.")


def _pools(app: Application, only: tuple[str, ...] = (), trust: str | None = None) -> dict:
    """Pool name -> pool: every pool, or those the names select (a type is both its pools)."""
    from raibid.agents.types import enabled_pools, select_pools

    pools = enabled_pools(app.cfg)
    if only:
        return {p.name: p for name in only for p in select_pools(pools, name, trust)}
    return pools


def _render_pools(app: Application, only: tuple[str, ...], secrets: dict[str, str] | None = None,
                  trust: str | None = None) -> list:
    """The agents component's manifests; with ``only``, the shared objects and those pools."""
    from raibid.agents.pools import POOL_LABEL
    from raibid.cluster.render import render
    from raibid.cluster.secrets import generate_secrets

    chosen = set(_pools(app, only, trust)) if only else None  # unknown types are an error before rendering
    manifests = render(app.cfg, ["agents"], namespace=app.namespace, secrets={**generate_secrets(), **(secrets or {})},
                       templates=app.templates)
    out = []
    for m in manifests:
        if m.component != "agents" and m.kind != "Namespace":
            continue
        pool = (m.obj["metadata"].get("labels") or {}).get(POOL_LABEL)
        if chosen is not None and pool is not None and pool not in chosen:
            continue
        out.append(m)
    return out


@agents.command("render")
@type_option
@pass_app
def render_(app: Application, types: tuple[str, ...]) -> None:
    """Print the pools' manifests (ScaledJobs, cache PVCs, TriggerAuthentication, NetworkPolicy) as YAML.

    Needs no cluster.
    """
    from raibid.cluster.render import to_yaml

    app.term.stdout.write(to_yaml([m for m in _render_pools(app, types) if m.kind != "Namespace"]))


@agents.command("deploy")
@type_option
@click.option("--dry-run", is_flag=True, help="Server-side dry run: report, change nothing.")
@click.option("--timeout", default="5m", show_default=True, metavar="DURATION",
              help="How long to wait for KEDA's CRDs on a fresh cluster.")
@click.option("--force-conflicts", is_flag=True, help="Take ownership of fields another manager owns.")
@json_option
@pass_app
def deploy(app: Application, types: tuple[str, ...], dry_run: bool, timeout: str, force_conflicts: bool,
           as_json: bool) -> None:
    """Apply the agent pools through the cluster engine, then prune pools removed from the config.

    `raibid cluster up` deploys them too (component `agents`). Pools of other
    types are left alone when --type is given.
    """
    from raibid.agents.pools import wait_for_keda
    from raibid.cluster.apply import ApplyFailed, apply_manifests, plan
    from raibid.cluster.prune import prune
    from raibid.timeutil import parse_duration

    kube = app.kube
    wait_for_keda(kube, timeout=parse_duration(timeout), progress=app.term.info)
    manifests, live = plan(kube, lambda secrets: _render_pools(app, types, secrets), app.namespace)
    try:
        changes = apply_manifests(kube, manifests, force=force_conflicts, dry_run=dry_run, live=live)
    except ApplyFailed as e:
        done = e.changes
        app.term.emit({"changes": done, "ok": False}, as_json, lambda: _changes(app, done))
        raise e.restated(f"deploy stopped: {e.message}", hint=e.hint) from None
    if not types:
        changes += prune(kube, manifests, ["agents"], dry_run=dry_run)
    app.term.emit({"changes": changes, "dry_run": dry_run, "ok": True}, as_json, lambda: _changes(app, changes))
    counts: dict[str, int] = {}
    for c in changes:
        counts[c.action] = counts.get(c.action, 0) + 1
    app.term.info(("dry run: " if dry_run else "") + ", ".join(f"{n} {a}" for a, n in counts.items()))


def _changes(app: Application, changes: list) -> None:
    app.term.table(["action", "kind", "name", "detail"], [(c.action, c.kind, c.name, c.detail) for c in changes])


def _running_jobs_by_pod(app: Application) -> dict[str, str]:
    """Pod name -> raibid job id, from the queue's running jobs (empty when Redis is unreachable)."""
    from raibid.errors import RaibidError

    try:
        return {j.agent_pod: j.id for j in app.queue.list(status="running", limit=1000) if j.agent_pod}
    except RaibidError as e:
        app.term.warn(f"cannot read the queue ({e.message}); job ids are not shown")
        return {}


def _lags(app: Application, pools: dict) -> dict[str, int | None]:
    from raibid.errors import RaibidError

    try:
        stats = app.queue.stats({n: (t.lag_count, t.max_replicas) for n, t in pools.items()})
    except RaibidError as e:
        app.term.warn(f"cannot read the queue ({e.message}); lag is not shown")
        return {}
    return {s.agent: s.lag for s in stats.streams}


@agents.command("list")
@type_option
@json_option
@pass_app
def list_(app: Application, types: tuple[str, ...], as_json: bool) -> None:
    """Agent Jobs and pods, with the raibid job each runs, phase, node and age."""
    from raibid.agents.pools import agent_jobs
    from raibid.terminal import format_age

    rows = agent_jobs(app.kube, app.namespace, _pools(app, types), _running_jobs_by_pod(app))
    app.term.emit(rows, as_json, lambda: app.term.table(
        ["type", "trust", "job", "pod", "raibid_job", "phase", "node", "age"],
        [(r.agent_type, r.trust, r.job, r.pod or "", r.raibid_job or "", r.phase, r.node or "",
          format_age(r.age_s)) for r in rows]))


@agents.command("status")
@type_option
@json_option
@pass_app
def status(app: Application, types: tuple[str, ...], as_json: bool) -> None:
    """Per pool: ScaledJob ready/active/paused, max, running and pending agent Jobs, queue lag."""
    from raibid.agents.pools import pool_status

    pools = _pools(app, types)
    rows = pool_status(app.kube, app.namespace, pools, _lags(app, pools))

    def flag(v: bool | None) -> str:
        return "-" if v is None else ("yes" if v else "no")

    app.term.emit(rows, as_json, lambda: app.term.table(
        ["type", "trust", "pool", "ready", "active", "paused", "max", "running", "pending", "lag", "problems"],
        [(r.agent_type, r.trust, r.pool, flag(r.ready), flag(r.active), "yes" if r.paused else "no",
          r.max_replicas if r.max_replicas is not None else "", r.running, r.pending,
          "" if r.lag is None else r.lag, "; ".join(r.problems)) for r in rows]))


@agents.command("explain")
@click.argument("agent_type", metavar="TYPE")
@trust_option
@json_option
@pass_app
def explain(app: Application, agent_type: str, trust: str | None, as_json: bool) -> None:
    """Why TYPE's pools are or are not scaling now, with KEDA's formula worked through.

    TYPE explains both of the type's pools; TYPE-untrusted (or --trust) one of
    them. --json prints a list, one object per pool.
    """
    from raibid.agents.pools import explain_pool

    pools = _pools(app)
    chosen = _pools(app, (agent_type,), trust)
    found = [explain_pool(app.kube, app.namespace, app.queue, pools, name, app.cfg.agents.scaling_strategy)
             for name in chosen]
    if as_json:
        app.term.json(found)
        return
    out = app.term.stdout

    def yn(v: bool | None) -> str:
        return "unknown" if v is None else ("yes" if v else "no")

    for i, e in enumerate(found):
        if i:
            out.write("\n")
        out.write(f"{e.agent_type}: {e.verdict}\n\n")
        out.write(f"  KEDA installed        {yn(e.keda_installed)}\n")
        out.write(f"  ScaledJob {e.pool:<11} {'present' if e.scaledjob_present else 'missing'}"
                  f"{'' if e.scaledjob_ready is None else (', ready' if e.scaledjob_ready else ', not ready')}\n")
        out.write(f"  paused                {yn(e.paused)}\n")
        out.write(f"  Redis                 {e.redis_version or 'unreachable'}"
                  f"{'' if e.redis_lag_ok is None else (' (lag supported)' if e.redis_lag_ok else ' (no lag: < 7)')}\n")
        out.write(f"  consumer group        {yn(e.group_exists)}, entries-read valid {yn(e.entries_read_valid)}\n")
        if e.gpu_requested:
            out.write(f"  nvidia.com/gpu        requested {e.gpu_requested}, allocatable on nodes "
                      f"{'unknown' if e.gpu_allocatable is None else e.gpu_allocatable}\n")
        if e.scale:
            s = e.scale
            out.write(f"\n  lag {s.lag}, lagCount {s.lag_count}, max {s.max_replicas}, running {s.running}, "
                      f"pending {s.pending}, strategy {s.strategy}\n")
            for step in s.steps:
                out.write(f"    {step}\n")
            out.write(f"  => {s.new_jobs} new Job(s) on the next poll\n")
        for p in e.problems:
            out.write(f"  ! {p}\n")


@agents.command("pause")
@click.argument("agent_type", metavar="TYPE")
@trust_option
@pass_app
def pause(app: Application, agent_type: str, trust: str | None) -> None:
    """Stop TYPE's pools from starting agents (annotation autoscaling.keda.sh/paused); running ones finish.

    TYPE pauses both of the type's pools (trusted and untrusted); TYPE-untrusted
    or --trust pauses one.
    """
    from raibid.agents.pools import set_paused

    for t in _pools(app, (agent_type,), trust).values():
        was = set_paused(app.kube, app.namespace, t, True)
        app.term.info(f"{t.scaled_job} {'was already' if was else 'is now'} paused; queued jobs wait until "
                      f"`raibid agents resume {t.name}`")


@agents.command("resume")
@click.argument("agent_type", metavar="TYPE")
@trust_option
@pass_app
def resume(app: Application, agent_type: str, trust: str | None) -> None:
    """Let TYPE's pools scale again (both, or the one TYPE-untrusted or --trust names)."""
    from raibid.agents.pools import set_paused

    for t in _pools(app, (agent_type,), trust).values():
        was = set_paused(app.kube, app.namespace, t, False)
        app.term.info(f"{t.scaled_job} {'resumed' if was else 'was not paused'}")


@agents.command("scale")
@click.argument("agent_type", metavar="TYPE")
@click.option("--max", "max_replicas", type=click.IntRange(min=1), required=True, metavar="N",
              help="New maxReplicaCount.")
@trust_option
@json_option
@pass_app
def scale(app: Application, agent_type: str, max_replicas: int, trust: str | None, as_json: bool) -> None:
    """Set the maximum of TYPE's pools now (until the next deploy; set agents.types.TYPE.max_replicas to keep it).

    TYPE sets both of the type's pools; TYPE-untrusted or --trust one. --json
    prints a list, one object per pool.
    """
    from raibid.agents.pools import KEDA
    from raibid.cluster.apply import apply_manifests, plan
    from raibid.errors import NotFound

    kube = app.kube
    chosen = _pools(app, (agent_type,), trust)
    before: dict[str, int | None] = {}
    for t in chosen.values():
        live = kube.get(KEDA, "ScaledJob", t.scaled_job, app.namespace)
        if live is None:
            raise NotFound(f"ScaledJob {app.namespace}/{t.scaled_job} not found",
                           hint="run `raibid agents deploy` first")
        before[t.name] = (live.get("spec") or {}).get("maxReplicaCount")

    def one(secrets: dict[str, str]) -> list:
        ms = [m for m in _render_pools(app, (agent_type,), secrets, trust) if m.kind == "ScaledJob"]
        for m in ms:
            m.obj["spec"]["maxReplicaCount"] = max_replicas
        return ms

    manifests, objs = plan(kube, one, app.namespace)
    apply_manifests(kube, manifests, live=objs)
    results = [{"agent_type": t.agent_type, "trust": t.trust, "pool": t.scaled_job, "max_before": before[t.name],
                "max": max_replicas, "configured_max": t.max_replicas} for t in chosen.values()]
    if as_json:
        app.term.json(results)
    for t in chosen.values():
        app.term.info(f"{t.scaled_job}: max {before[t.name]} -> {max_replicas}"
                      + ("" if max_replicas == t.max_replicas else
                         f" (until the next deploy, which sets {t.max_replicas} again; "
                         f"set agents.types.{t.agent_type}.max_replicas to keep it)"))


@agents.command("gc")
@click.option("--older-than", default="1h", show_default=True, metavar="DURATION",
              help="Only agent Jobs that finished at least this long ago.")
@click.option("--dry-run", is_flag=True, help="List what would be deleted.")
@json_option
@pass_app
def gc(app: Application, older_than: str, dry_run: bool, as_json: bool) -> None:
    """Delete finished and failed agent Jobs, and agent pods whose Job is gone."""
    from raibid.agents.pools import gc as collect
    from raibid.terminal import format_age
    from raibid.timeutil import parse_duration

    rows = collect(app.kube, app.namespace, _pools(app), older_than_s=parse_duration(older_than), dry_run=dry_run)
    app.term.emit(rows, as_json, lambda: app.term.table(
        ["action", "kind", "name", "reason", "age"],
        [(r.action, r.kind, r.name, r.reason, format_age(r.age_s)) for r in rows]))
    if not as_json:
        app.term.info(f"{'would delete' if dry_run else 'deleted'} {len(rows)} object(s)")
