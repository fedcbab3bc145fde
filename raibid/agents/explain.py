"""Why a pool is or is not scaling: KEDA's ScaledJob arithmetic, worked through with live numbers.

From KEDA's ``pkg/scaling/executor/scale_jobs.go`` (see docs/agents.md):

* ``maxScale = min(max, ceil(lag / lagCount))``
* default:  ``maxScale - running``
* accurate: ``max - running`` if ``maxScale + running - pending > max`` else ``maxScale - pending``
* eager:    ``min(max - running - pending, maxScale)``

``running`` counts the pool's Jobs that have not finished; ``pending`` those
whose pods have not started yet. A result below zero creates no Jobs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

STRATEGIES = ("default", "accurate", "eager")


@dataclass
class Scale:
    """One worked scaling decision."""

    strategy: str
    lag: int
    lag_count: int
    max_replicas: int
    running: int
    pending: int
    max_scale: int
    new_jobs: int
    steps: list[str]


def max_scale(lag: int, lag_count: int, max_replicas: int) -> int:
    return min(max_replicas, math.ceil(max(lag, 0) / max(lag_count, 1)))


def decide(strategy: str, lag: int, lag_count: int, max_replicas: int, running: int, pending: int) -> Scale:
    """The number of Jobs KEDA creates on this poll, with each step of the formula written out."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown scaling strategy {strategy!r}")
    ms = max_scale(lag, lag_count, max_replicas)
    steps = [f"maxScale = min(max {max_replicas}, ceil(lag {lag} / lagCount {lag_count})) = {ms}"]
    if strategy == "default":
        raw = ms - running
        steps.append(f"default: maxScale {ms} - running {running} = {raw}")
    elif strategy == "accurate":
        if ms + running - pending > max_replicas:
            raw = max_replicas - running
            steps.append(f"accurate: maxScale {ms} + running {running} - pending {pending} = "
                         f"{ms + running - pending} > max {max_replicas}, so max - running = {raw}")
        else:
            raw = ms - pending
            steps.append(f"accurate: maxScale {ms} + running {running} - pending {pending} = "
                         f"{ms + running - pending} <= max {max_replicas}, so maxScale - pending = {raw}")
    else:
        raw = min(max_replicas - running - pending, ms)
        steps.append(f"eager: min(max {max_replicas} - running {running} - pending {pending}, maxScale {ms}) = {raw}")
    new = max(raw, 0)
    if raw < 0:
        steps.append(f"{raw} < 0: no new Jobs")
    return Scale(strategy, lag, lag_count, max_replicas, running, pending, ms, new, steps)


@dataclass
class Explanation:
    """Everything `agents explain TYPE` checks, and the verdict."""

    agent_type: str
    pool: str
    verdict: str
    scaling: bool
    scale: Scale | None
    keda_installed: bool
    scaledjob_present: bool
    scaledjob_ready: bool | None
    paused: bool
    redis_version: str | None
    redis_lag_ok: bool | None
    group_exists: bool | None
    entries_read_valid: bool | None
    lag: int | None
    pending_entries: int | None
    running_jobs: int
    pending_jobs: int
    gpu_requested: int = 0
    gpu_allocatable: int | None = None
    problems: list[str] = field(default_factory=list)


def verdict(e: Explanation) -> tuple[str, bool]:
    """(one sentence, whether the pool is scaling up right now)."""
    if not e.keda_installed:
        return "KEDA is not installed, so nothing creates agent Jobs", False
    if not e.scaledjob_present:
        return f"ScaledJob {e.pool} does not exist: run `raibid agents deploy`", False
    if e.paused:
        return f"the pool is paused: `raibid agents resume {e.agent_type}`", False
    if e.gpu_requested and not e.gpu_allocatable:
        return ("no node advertises nvidia.com/gpu, so agent pods stay Pending: install the NVIDIA driver "
                "and device plugin"), bool(e.scale and e.scale.new_jobs)
    if e.redis_lag_ok is False:
        return f"Redis {e.redis_version} has no stream lag (needs >= 7), so KEDA cannot scale from zero", False
    if e.group_exists is False:
        return "the stream has no raibid-agents group, so KEDA counts XLEN: run `raibid queue init`", False
    if e.entries_read_valid is False:
        return "Redis lost the group's entries-read, so the lag reads as 0: run `raibid queue reap`", False
    if e.scale is None:
        return "the queue could not be read", False
    s = e.scale
    if s.lag == 0:
        return "no queued jobs (lag 0): nothing to scale", False
    if s.new_jobs > 0:
        return f"scaling: {s.new_jobs} new Job(s) on the next poll", True
    if e.running_jobs >= s.max_replicas:
        return f"at the pool's maximum ({s.max_replicas} Jobs); queued jobs wait for a free agent", False
    if e.pending_jobs:
        return f"{e.pending_jobs} agent Job(s) are still starting and will take the queued jobs", False
    return "the formula gives no new Jobs for these numbers", False
