"""Views of one Snapshot: Rich panels (full or compact) and plain text for pipes.

Every view draws the same Snapshot that `top --json` prints. Below 100 columns
or 30 rows the panels collapse to their headline numbers, one line per pool or
component, so the dashboard fits an 80x24 terminal; the jobs list takes what
height is left.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from raibid.safetext import printable, rich_text
from raibid.top.model import Backend, JobRow, Snapshot

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

STATUS_STYLE = {"queued": "yellow", "running": "cyan", "succeeded": "green", "failed": "red",
                "cancelled": "dim", "dead": "bold red"}
STATE_STYLE = {"healthy": "green", "progressing": "yellow", "degraded": "red", "missing": "red"}
VERDICT_STYLE = {"in-sync": "green", "pending": "yellow", "failed": "red", "not-bootstrapped": "yellow",
                 "unknown": "red"}
COMPACT_WIDTH, COMPACT_HEIGHT = 100, 30
# A cell never needs more than a wide terminal's width; a 1 MiB log line is cut before it is escaped and drawn.
CELL_LIMIT = 1000


def age(seconds: float | None) -> str:
    from raibid.terminal import format_age

    return format_age(seconds) or "-"


def pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.0f}%"


def _num(value: Any) -> str:
    return "n/a" if value is None else str(value)


def _yesno(value: bool | None) -> str:
    return "?" if value is None else ("yes" if value else "no")


def _when(b: Backend) -> str:
    return f" (showing data from {b.last_ok_at})" if b.stale and b.last_ok_at else ""


def backend_problem(b: Backend) -> str | None:
    """One line saying what is wrong with a backend, or None."""
    if b.ok:
        return None
    return f"{b.name}: {b.error}{_when(b)}" + (f" (hint: {b.hint})" if b.hint else "")


# ----------------------------------------------------------------------------- Rich


def dashboard(snap: Snapshot, console: Console) -> RenderableType:
    """The whole screen for ``console``'s size: full panels, or headline numbers when small."""
    width, height = console.size
    compact = width < COMPACT_WIDTH or height < COMPACT_HEIGHT
    return _compact(snap, console) if compact else _full(snap, console)


def _header(snap: Snapshot, *, compact: bool = False) -> Any:
    from rich.text import Text

    h = snap.header
    t = Text(no_wrap=compact, overflow="ellipsis")
    t.append("raibid top", style="bold")
    # Only the live view refreshes and reads keys; a --once snapshot has no interval.
    live = f" every {h.interval_s:g}s  q+Enter quits" if h.interval_s else ""
    t.append(f"  {h.refreshed_at}{live}\n", style="dim")
    parts = [("cluster", h.cluster, "kubernetes"), ("ns", h.namespace, None), ("redis", h.redis, "redis"),
             ("gitea", h.gitea + (f" ({h.gitea_version})" if h.gitea_version else ""), "gitea")]
    for i, (label, value, backend) in enumerate(parts):
        b = snap.backends.get(backend) if backend else None
        style = "red" if b is not None and not b.ok else ""
        t.append(("  " if i else "") + f"{label} ", style="dim")
        t.append(printable(value, limit=CELL_LIMIT) + (" ✗" if style else ""), style=style)
    for b in snap.backends.values():
        line = backend_problem(b)
        if line:
            t.append("\n" + printable(line, limit=CELL_LIMIT), style="bold red")
    return t


def _panel(body: Any, title: str, backend: Backend | None) -> Any:
    from rich.panel import Panel

    style, suffix = "blue", ""
    if backend is not None and not backend.ok:
        style, suffix = "red", " (stale)" if backend.stale else " (unavailable)"
    return Panel(body, title=f"[bold]{title}[/bold]{suffix}", title_align="left", border_style=style, expand=True)


FLEX = ("problems", "last line", "repo", "repo@ref")  # columns that take (or give up) the spare width


def _table(*columns: str, **kw: Any) -> Any:
    from rich.table import Table

    t = Table(show_edge=False, box=None, pad_edge=False, header_style="bold", expand=True, **kw)
    for i, c in enumerate(columns):
        t.add_column(c, no_wrap=True, overflow="ellipsis", justify="left" if i == 0 or not c.isupper() else "right",
                     ratio=1 if c in FLEX else None, min_width=len(c) if c not in FLEX else None)
    return t


def _add_row(table: Any, *cells: Any) -> None:
    """A row whose text cells are ``Text``: a repo name, ref, step or log line is never read as Rich markup."""
    table.add_row(*(c if not isinstance(c, str) else rich_text(c, limit=CELL_LIMIT) for c in cells))


def _queue_table(snap: Snapshot) -> Any:
    t = _table("agent", "QUEUED", "RUNNING", "PENDING", "oldest", "DONE 5m", "OK 5m", "DONE 60m", "OK 60m", "keda")
    for p in snap.queue.pools:
        keda = "" if p.keda_desired is None else f"{p.keda_desired}/{p.max_replicas}"
        _add_row(t, p.agent, _num(p.queued), str(p.running), str(p.pending), age(p.oldest_queued_age_s),
                  str(p.finished_5m), pct(p.success_rate_5m), str(p.finished_60m), pct(p.success_rate_60m), keda)
    return t


def _queue_footer(snap: Snapshot) -> str:
    q, b = snap.queue, snap.backends.get("redis")
    if b is not None and not b.ok and not b.stale:
        return "no data from Redis yet"  # not zeros that look like an empty queue
    note = "" if q.window_complete else f" (5m/60m from {q.scanned} read)"
    return f"dead-letter {q.dead_letter} · jobs {q.jobs_total}{note}" + (f" · redis {q.redis_version}"
                                                                          if q.redis_version else "")


def _pools_table(snap: Snapshot) -> Any:
    t = _table("pool", "type", "ready", "active", "paused", "RUNNING", "PENDING", "MAX")
    for p in snap.agents.pools:
        _add_row(t, p.name, p.agent_type, _yesno(p.ready), _yesno(p.active), _yesno(p.paused), str(p.running),
                  str(p.pending), str(p.max_replicas))
    return t


def _pods_table(snap: Snapshot) -> Any:
    t = _table("pod", "phase", "job", "repo", "ref", "step", "elapsed")
    for p in snap.agents.pods:
        _add_row(t, p.name, _styled(p.phase, "green" if p.phase == "Running" else "yellow"), p.job_id or "-",
                  p.repo or "", p.ref or "", p.step or "", age(p.elapsed_s))
    return t


def _styled(text: str, style: str) -> Any:
    return rich_text(text, style, limit=CELL_LIMIT)


def _jobs_table(jobs: list[JobRow], rows: int, *, compact: bool = False) -> Any:
    if compact:
        t = _table("status", "job", "repo@ref", "agent", "time", "last line")
    else:
        t = _table("status", "job", "repo", "ref", "agent", "duration", "last line")
    for j in jobs[:max(rows, 0)]:
        status = _styled(j.status, STATUS_STYLE.get(j.status, ""))
        line = (j.last_log_line or "") if j.status == "running" else (
            "" if j.exit_code is None else f"exit {j.exit_code}")
        if compact:
            _add_row(t, status, j.id[-10:], f"{j.repo}@{j.ref}", j.agent, age(j.duration_s), line)
        else:
            _add_row(t, status, j.id, j.repo, j.ref, j.agent, age(j.duration_s), line)
    return t


def _components_line(snap: Snapshot) -> Any:
    from rich.text import Text

    t = Text()
    for i, c in enumerate(snap.cluster.components):
        t.append(("  " if i else "") + printable(f"{c.component} ", limit=CELL_LIMIT))
        t.append(printable(f"{c.ready}/{c.desired} {c.state}", limit=CELL_LIMIT), style=STATE_STYLE.get(c.state, ""))
    return t


def _extras_lines(snap: Snapshot) -> list[Any]:
    from rich.text import Text

    out = []
    g = snap.cluster.gitops
    if g is not None:
        t = Text("gitops ")
        t.append(printable(g.verdict), style=VERDICT_STYLE.get(g.verdict, ""))
        if g.message:  # Flux's message quotes the config repo (kustomize errors): repo-controlled text
            t.append(" " + printable(g.message, limit=CELL_LIMIT), style="dim")
        out.append(t)
    m = snap.cluster.mirror
    if m is not None:
        counts = ", ".join(f"{n} {a}" for a, n in m.counts.items()) or "nothing"
        t = Text(printable(f"mirror {age(m.age_s)} ago: {counts}", limit=CELL_LIMIT))
        if m.failed:
            t.append(printable(f"; failed: {', '.join(m.failed)}", limit=CELL_LIMIT), style="red")
        out.append(t)
    return out


def _cluster_body(snap: Snapshot) -> Any:
    from rich.console import Group

    t = _table("component", "state", "READY", "version", "problems")
    for c in snap.cluster.components:
        _add_row(t, c.component, _styled(c.state, STATE_STYLE.get(c.state, "")), f"{c.ready}/{c.desired}",
                  c.version, "; ".join(c.problems))
    return Group(t, *_extras_lines(snap))


def _agents_body(snap: Snapshot) -> Any:
    from rich.console import Group
    from rich.text import Text

    a = snap.agents
    if not a.keda_installed:
        return rich_text(a.message or "KEDA is not installed", "yellow", limit=CELL_LIMIT)
    parts: list[Any] = [_pools_table(snap)]
    if a.pods:
        parts += [Text(""), _pods_table(snap)]
    elif not a.pools:
        parts = [Text("no agent pools (ScaledJobs labelled raibid.dev/component=agents)", style="dim")]
    return Group(*parts)


def _height(console: Console, renderable: Any, width: int) -> int:
    return len(console.render_lines(renderable, console.options.update(width=width, height=None), pad=False))


def _full(snap: Snapshot, console: Console) -> Any:
    from rich.console import Group
    from rich.table import Table

    width, height = console.size
    kube, redis = snap.backends.get("kubernetes"), snap.backends.get("redis")
    top = Table.grid(expand=True, padding=(0, 1))
    top.add_column(ratio=3)
    top.add_column(ratio=2)
    top.add_row(_panel(Group(_queue_table(snap), _styled(_queue_footer(snap), "dim")), "Queue", redis),
                _panel(_cluster_body(snap), "Cluster", kube))
    above = Group(_header(snap), top, _panel(_agents_body(snap), "Agents", kube))
    used = _height(console, above, width)
    rows = max(1, height - used - 3)  # the jobs panel's borders and header
    return Group(above, _panel(_jobs_table(snap.jobs, rows), "Jobs", redis))


def _compact(snap: Snapshot, console: Console) -> Any:
    from rich.console import Group
    from rich.text import Text

    width, height = console.size
    kube, redis = snap.backends.get("kubernetes"), snap.backends.get("redis")
    lines: list[Any] = [_header(snap, compact=True)]

    def title(name: str, b: Backend | None) -> Text:
        bad = b is not None and not b.ok
        suffix = "" if b is None or b.ok else " (stale)" if b.stale else " (unavailable)"
        return Text(f"── {name}" + suffix, style="bold red" if bad else "bold blue")

    lines.append(title("Queue", redis))
    for p in snap.queue.pools:
        lines.append(rich_text(
            f"{p.agent:<10} queued {_num(p.queued):>3}  run {p.running:>2}  pend {p.pending:>2}  "
            f"oldest {age(p.oldest_queued_age_s):>3}  5m {p.finished_5m} {pct(p.success_rate_5m)}  "
            f"60m {p.finished_60m} {pct(p.success_rate_60m)}", limit=CELL_LIMIT, no_wrap=True, overflow="ellipsis"))
    lines.append(rich_text(_queue_footer(snap), "dim", limit=CELL_LIMIT, no_wrap=True, overflow="ellipsis"))
    lines.append(title("Agents", kube))
    if not snap.agents.keda_installed:
        lines.append(rich_text(snap.agents.message or "KEDA is not installed", "yellow", limit=CELL_LIMIT,
                               no_wrap=True, overflow="ellipsis"))
    for pool in snap.agents.pools:
        flags = "paused" if pool.paused else ("ready" if pool.ready else "not ready")
        lines.append(rich_text(f"{pool.name:<16} {flags:<9} running {pool.running}  pending {pool.pending}  "
                               f"max {pool.max_replicas}", limit=CELL_LIMIT, no_wrap=True, overflow="ellipsis"))
    lines.append(title("Cluster", kube))
    comp = _components_line(snap)
    comp.no_wrap, comp.overflow = True, "ellipsis"
    lines.append(comp)
    for extra in _extras_lines(snap):
        extra.no_wrap, extra.overflow = True, "ellipsis"
        lines.append(extra)
    lines.append(title("Jobs", redis))
    above = Group(*lines)
    rows = max(1, height - _height(console, above, width) - 1)
    return Group(above, _jobs_table(snap.jobs, rows, compact=True))


# ----------------------------------------------------------------------------- plain text


def plain(snap: Snapshot) -> str:
    """Tab-separated sections with upper-case headers, for pipes and scripts that don't want JSON."""
    out: list[str] = []

    def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
        out.append("")
        out.append(f"# {title}")
        out.append("\t".join(c.upper() for c in columns))
        # Tabs, newlines and every control sequence in a value are shown escaped: one row stays one line.
        out.extend("\t".join(printable(v) for v in row) for row in rows)

    h = snap.header
    out.append(f"raibid top\t{h.refreshed_at}")
    out.append(f"cluster\t{printable(h.cluster)}")
    out.append(f"namespace\t{printable(h.namespace)}")
    out.append(f"redis\t{printable(h.redis)}")
    out.append(f"gitea\t{printable(h.gitea)}" + (f"\t{printable(h.gitea_version)}" if h.gitea_version else ""))
    table("backends", ["backend", "state", "error"],
          [[b.name, ("stale" if b.stale else "unavailable") if not b.ok else "ok", b.error or ""]
           for b in snap.backends.values()])
    table("queue", ["agent", "queued", "running", "pending", "oldest", "done_5m", "success_5m", "done_60m",
                    "success_60m", "keda"],
          [[p.agent, _num(p.queued), p.running, p.pending, age(p.oldest_queued_age_s), p.finished_5m,
            pct(p.success_rate_5m), p.finished_60m, pct(p.success_rate_60m),
            "" if p.keda_desired is None else f"{p.keda_desired}/{p.max_replicas}"] for p in snap.queue.pools])
    out.append(printable(_queue_footer(snap)))
    if snap.agents.keda_installed:
        table("agents", ["pool", "type", "ready", "active", "paused", "running", "pending", "max"],
              [[p.name, p.agent_type, _yesno(p.ready), _yesno(p.active), _yesno(p.paused), p.running, p.pending,
                p.max_replicas] for p in snap.agents.pools])
        table("agent pods", ["pod", "phase", "job", "repo", "ref", "step", "elapsed"],
              [[p.name, p.phase, p.job_id, p.repo, p.ref, p.step, age(p.elapsed_s)] for p in snap.agents.pods])
    else:
        out += ["", "# agents", printable(snap.agents.message or "KEDA is not installed")]
    table("jobs", ["status", "job", "repo", "ref", "agent", "duration", "last line"],
          [[j.status, j.id, j.repo, j.ref, j.agent, age(j.duration_s), j.last_log_line or ""] for j in snap.jobs])
    table("cluster", ["component", "state", "ready", "version", "problems"],
          [[c.component, c.state, f"{c.ready}/{c.desired}", c.version, "; ".join(c.problems)]
           for c in snap.cluster.components])
    for extra in _extras_lines_plain(snap):
        out.append(extra)
    return "\n".join(out) + "\n"


def _extras_lines_plain(snap: Snapshot) -> list[str]:
    out = []
    g = snap.cluster.gitops
    if g is not None:
        out.append(f"gitops\t{printable(g.verdict)}\t{printable(g.message)}")
    m = snap.cluster.mirror
    if m is not None:
        counts = ", ".join(f"{n} {a}" for a, n in m.counts.items()) or "nothing"
        out.append(f"mirror\t{printable(m.time or '-')}\t{printable(counts)}"
                   + (f"\tfailed: {printable(', '.join(m.failed))}" if m.failed else ""))
    return out
