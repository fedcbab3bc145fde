"""The job queue on Redis Streams (see docs/queue.md).

Every key name raibid uses in Redis is defined in this module (``Keys``).

Delivery is at-least-once: a worker claims with XREADGROUP (after reclaiming
stale entries with XAUTOCLAIM), keeps its entry alive with heartbeats, and the
entry is acked only when the job reaches a terminal state. A job delivered
``max_deliveries`` times without finishing goes to the dead-letter stream.
State changes that must not race (start, heartbeat, finish, release, cancel,
submit) are single Lua scripts, so Redis applies each atomically.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypeVar

from raibid.errors import AuthError, ConfigError, NotFound, QueueError, Unreachable, UsageError, redact_url

if TYPE_CHECKING:
    from raibid.app import Application

GROUP = "raibid-agents"
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "dead")
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "dead"})
RETRYABLE = frozenset({"failed", "cancelled", "dead"})
AGENT_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


# --------------------------------------------------------------------------- errors


@contextlib.contextmanager
def redis_errors(url: str) -> Iterator[None]:
    """Map redis-py exceptions to typed errors; the URL is shown without its password."""
    import redis

    shown = redact_url(url)
    try:
        yield
    except redis.AuthenticationError as e:
        raise AuthError(f"Redis at {shown} rejected the credentials: {e}",
                        hint="check the env var named by redis.password_env") from None
    except redis.ResponseError as e:
        text = str(e)
        if text.startswith(("NOAUTH", "WRONGPASS", "NOPERM", "invalid password", "invalid username")):
            raise AuthError(f"Redis at {shown}: {text}",
                            hint="set the password in the env var named by redis.password_env") from None
        raise QueueError(f"Redis at {shown}: {text}") from None
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise Unreachable(f"cannot reach Redis at {shown}: {e}",
                          hint="is Redis running? check redis.url (or RAIBID_REDIS_URL)") from None


def connect(url: str, password: str | None = None, *, timeout: float = 5.0) -> Any:
    """A redis.Redis for ``url``; the password comes from the env, never from argv."""
    import redis

    try:
        return redis.Redis.from_url(url, password=password, decode_responses=True,
                                    socket_connect_timeout=timeout, socket_timeout=timeout + 60,
                                    health_check_interval=0)
    except ValueError as e:
        raise ConfigError(f"invalid redis.url {redact_url(url)}: {e}") from None


F = TypeVar("F", bound=Callable[..., Any])


def _mapped(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(self: Queue, *args: Any, **kwargs: Any) -> Any:
        with redis_errors(self.url):
            return fn(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


# --------------------------------------------------------------------------- model


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_B32_TO_CROCKFORD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _CROCKFORD)


_last_id = [0, 0]  # (ms, random part) of the last id made in this process


def new_job_ids(n: int = 1) -> list[str]:
    """``n`` ULIDs: 48-bit ms time + 80 random bits, Crockford base32, URL-safe.

    Ids of one call share the millisecond and count up from one random value, so
    they also sort in the order they were made (a monotonic ULID sequence).
    """
    import base64
    import os
    import time

    ms = time.time_ns() // 1_000_000
    if ms <= _last_id[0]:  # same (or an earlier, clock-stepped) millisecond: keep counting up
        ms, base = _last_id[0], _last_id[1] + 1
    else:
        base = int.from_bytes(os.urandom(10), "big") >> 8  # headroom so +n never overflows 80 bits
    _last_id[0], _last_id[1] = ms, base + n - 1
    head = "".join(_CROCKFORD[(ms >> shift) & 31] for shift in range(45, -1, -5))
    b32, tr = base64.b32encode, _B32_TO_CROCKFORD
    return [head + b32((base + i).to_bytes(10, "big")).decode().translate(tr) for i in range(n)]


def new_job_id() -> str:
    return new_job_ids(1)[0]


@dataclass
class Keys:
    """Every Redis key raibid uses. Change names here and nowhere else."""

    prefix: str = "raibid"

    def stream(self, agent: str) -> str:
        return f"{self.prefix}:jobs:{agent}"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def log(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:log"

    @property
    def dead(self) -> str:
        return f"{self.prefix}:jobs:dead"

    @property
    def index(self) -> str:
        """Sorted set of job ids by submit time (ms): listing never scans the keyspace."""
        return f"{self.prefix}:jobs:index"

    @property
    def agents(self) -> str:
        """Set of agent types that have a stream."""
        return f"{self.prefix}:agents"


@dataclass
class JobSpec:
    """What to run. Validated before anything is written."""

    repo: str
    ref: str
    commit: str | None = None
    agent: str | None = None
    command: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    timeout: int | None = None
    source: str = "cli"

    def validate(self) -> None:
        if not REPO_RE.match(self.repo or ""):
            raise UsageError(f"invalid repo {self.repo!r}: expected OWNER/NAME")
        if not self.ref:
            raise UsageError("a ref (branch, tag or sha) is required")
        for name in ("ref", "commit", "command"):
            value = getattr(self, name)
            if value is not None and ("\x1f" in value or "\x00" in value):
                raise UsageError(f"{name} contains a control character")
        if self.agent is not None:
            validate_agent(self.agent)
        if self.timeout is not None and (not isinstance(self.timeout, int) or self.timeout <= 0):
            raise UsageError(f"invalid timeout {self.timeout!r}: a positive number of seconds")
        if self.source not in ("cli", "mirror", "webhook", "retry"):
            raise UsageError(f"invalid source {self.source!r}")
        if not isinstance(self.env, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in self.env.items()):
            raise UsageError("env must map names to string values")


def validate_agent(agent: str) -> None:
    if not AGENT_RE.match(agent) or agent == "dead":
        raise UsageError(f"invalid agent type {agent!r}: lower-case letters, digits and '-', not 'dead'")


@dataclass
class Job:
    id: str
    repo: str
    ref: str
    agent: str
    status: str
    commit: str | None = None
    command: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    timeout: int = 3600
    source: str = "cli"
    submitted_at: str | None = None
    attempt: int = 1
    deliveries: int = 0
    stream_id: str | None = None
    agent_pod: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    heartbeat_at: str | None = None
    exit_code: int | None = None
    error: str | None = None
    retry_of: str | None = None
    retried_by: str | None = None
    cancel_requested: bool = False

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> Job:
        names = {f.name for f in fields(cls)}
        data: dict[str, Any] = {k: (v if v != "" else None) for k, v in h.items() if k in names}
        for k in ("timeout", "attempt", "deliveries", "exit_code"):
            if data.get(k) is not None:
                data[k] = int(data[k])
        data["env"] = json.loads(h.get("env") or "{}")
        data["cancel_requested"] = h.get("cancel_requested") == "1"
        for k in ("attempt", "deliveries"):
            data.setdefault(k, 0 if k == "deliveries" else 1)
            if data[k] is None:
                data[k] = 0
        return cls(**data)


@dataclass
class Claim:
    """A job a worker holds: what it must heartbeat, log to and finish."""

    job: Job
    stream: str
    stream_id: str
    consumer: str


@dataclass
class ConsumerInfo:
    name: str
    pending: int
    idle_ms: int


@dataclass
class StreamStats:
    agent: str
    stream: str
    length: int
    lag: int | None
    pending: int
    consumers: list[ConsumerInfo]
    oldest_queued_at: str | None
    oldest_queued_age_s: float | None
    group_exists: bool
    lag_count: int
    max_replicas: int
    keda_desired: int | None


@dataclass
class QueueStats:
    streams: list[StreamStats]
    dead_letter: int
    redis_version: str
    lag_supported: bool
    warnings: list[str]


@dataclass
class DeadLetter:
    entry_id: str
    job_id: str
    reason: str
    stream: str
    at: str | None


@dataclass
class ReapResult:
    requeued: list[str]
    dead_lettered: list[str]
    acked: list[str]
    lag_repaired: list[str] = field(default_factory=list)


class LostJob(QueueError):
    """The worker no longer owns the entry (it was reclaimed, requeued or finished elsewhere)."""


# --------------------------------------------------------------------------- Lua

# submit: XADD and the job records for a batch of jobs of one agent type, in one
# step, so no worker ever sees an entry without its job and bulk submit costs one
# round trip per batch. KEYS: stream, index, agents set, then one job key per job.
# ARGV: agent, submitted_at, score, source, then one string per job: id, repo, ref,
# commit, command, env, timeout, attempt, retry_of joined by \x1f (one argument per
# job instead of nine keeps client-side encoding cheap; validation bans \x1f).
_SEP = "\x1f"
_SUBMIT = """
local SEP = string.char(31)
local function split(s)
  local t, i = {}, 1
  while true do
    local j = string.find(s, SEP, i, true)
    if not j then t[#t + 1] = string.sub(s, i); return t end
    t[#t + 1] = string.sub(s, i, j - 1)
    i = j + 1
  end
end
local n = #KEYS - 3
local out, scores = {}, {}
for i = 1, n do
  local v = split(ARGV[4 + i])
  local id = v[1]
  local sid = redis.call('XADD', KEYS[1], '*', 'job', id)
  local h = {'id', id, 'repo', v[2], 'ref', v[3], 'agent', ARGV[1], 'env', v[6],
             'timeout', v[7], 'source', ARGV[4], 'submitted_at', ARGV[2], 'status', 'queued',
             'attempt', v[8], 'deliveries', '0', 'stream_id', sid}
  if v[4] ~= '' then h[#h + 1] = 'commit'; h[#h + 1] = v[4] end
  if v[5] ~= '' then h[#h + 1] = 'command'; h[#h + 1] = v[5] end
  if v[9] ~= '' then h[#h + 1] = 'retry_of'; h[#h + 1] = v[9] end
  redis.call('HSET', KEYS[3 + i], unpack(h))
  scores[#scores + 1] = ARGV[3]
  scores[#scores + 1] = id
  out[i] = sid
end
redis.call('ZADD', KEYS[2], unpack(scores))
redis.call('SADD', KEYS[3], ARGV[1])
return out
"""

# start: called right after a worker received an entry. Skips cancelled, finished,
# stale or missing jobs (acking them) and dead-letters jobs delivered too often.
_START = """
local status = redis.call('HGET', KEYS[2], 'status')
local sid = redis.call('HGET', KEYS[2], 'stream_id')
if (not status) or sid ~= ARGV[2] or (status ~= 'queued' and status ~= 'running') then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return status or 'missing'
end
local d = tonumber(redis.call('HGET', KEYS[2], 'deliveries') or '0')
if d >= tonumber(ARGV[5]) then
  local reason = 'delivered ' .. d .. ' times without finishing (max_deliveries ' .. ARGV[5] .. ')'
  redis.call('XADD', KEYS[3], '*', 'job', ARGV[6], 'reason', reason, 'stream', KEYS[1], 'stream_id', ARGV[2],
             'at', ARGV[4])
  redis.call('HSET', KEYS[2], 'status', 'dead', 'error', reason, 'finished_at', ARGV[4])
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return 'dead'
end
redis.call('HSET', KEYS[2], 'status', 'running', 'agent_pod', ARGV[3], 'started_at', ARGV[4],
           'heartbeat_at', ARGV[4], 'deliveries', d + 1)
return 'ok'
"""

# Own-check shared by heartbeat/finish/release: the job still points at this entry,
# and the entry is still pending for this consumer.
_OWNS = """
local function owns(stream, group, sid, consumer, jobkey)
  if redis.call('HGET', jobkey, 'stream_id') ~= sid then return false end
  if redis.call('HGET', jobkey, 'status') ~= 'running' then return false end
  local p = redis.call('XPENDING', stream, group, sid, sid, 1)
  return #p == 1 and p[1][2] == consumer
end
"""

_HEARTBEAT = _OWNS + """
if not owns(KEYS[1], ARGV[1], ARGV[2], ARGV[3], KEYS[2]) then return -1 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
redis.call('HSET', KEYS[2], 'heartbeat_at', ARGV[4])
if redis.call('HGET', KEYS[2], 'cancel_requested') == '1' then return 1 end
return 0
"""

# Trim acked history below both the oldest pending entry and the next undelivered
# one: XTRIM MINID never touches undelivered entries, so the lag KEDA reads stays exact.
_TRIM = """
local function trim(stream, group)
  local groups = redis.call('XINFO', 'GROUPS', stream)
  local last = nil
  for _, g in ipairs(groups) do
    local name, ld = nil, nil
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] end
      if g[i] == 'last-delivered-id' then ld = g[i + 1] end
    end
    if name == group then last = ld end
  end
  if not last or last == '0-0' then return end
  local ms, seq = string.match(last, '^(%d+)-(%d+)$')
  local minid = ms .. '-' .. (tonumber(seq) + 1)
  local p = redis.call('XPENDING', stream, group)
  if p[1] > 0 then minid = p[2] end
  redis.call('XTRIM', stream, 'MINID', minid)
end
"""

_FINISH = _OWNS + _TRIM + """
if not owns(KEYS[1], ARGV[1], ARGV[2], ARGV[3], KEYS[2]) then
  return 0
end
redis.call('HSET', KEYS[2], 'status', ARGV[5], 'finished_at', ARGV[4], 'exit_code', ARGV[6], 'error', ARGV[7])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if tonumber(ARGV[8]) > 0 then redis.call('EXPIRE', KEYS[3], ARGV[8]) end
trim(KEYS[1], ARGV[1])
return 1
"""

# requeue: ack the old entry and add a fresh one (so KEDA's lag sees it again),
# or dead-letter when the job has used its deliveries. Used by release and reap.
_REQUEUE = _TRIM + """
local d = tonumber(redis.call('HGET', KEYS[2], 'deliveries') or '0')
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
local status = redis.call('HGET', KEYS[2], 'status')
if (not status) or redis.call('HGET', KEYS[2], 'stream_id') ~= ARGV[2] or
   (status ~= 'running' and status ~= 'queued') then
  return 'acked'
end
if d >= tonumber(ARGV[5]) then
  local reason = ARGV[3] .. '; delivered ' .. d .. ' times (max_deliveries ' .. ARGV[5] .. ')'
  redis.call('XADD', KEYS[3], '*', 'job', ARGV[6], 'reason', reason, 'stream', KEYS[1], 'stream_id', ARGV[2],
             'at', ARGV[4])
  redis.call('HSET', KEYS[2], 'status', 'dead', 'error', reason, 'finished_at', ARGV[4])
  trim(KEYS[1], ARGV[1])
  return 'dead'
end
local sid = redis.call('XADD', KEYS[1], '*', 'job', ARGV[6])
redis.call('HSET', KEYS[2], 'status', 'queued', 'stream_id', sid, 'error', ARGV[3], 'agent_pod', '')
redis.call('HDEL', KEYS[2], 'started_at', 'heartbeat_at')
trim(KEYS[1], ARGV[1])
return 'requeued'
"""

# After an AOF reload Redis 7.0 can forget a group's entries-read, so XINFO GROUPS
# reports lag nil and KEDA sees 0: scaled to zero, nothing would ever start again.
# Recompute it from entries-added minus the undelivered entries (we never XDEL
# undelivered entries, so this is exact) and set it with XGROUP SETID ... ENTRIESREAD.
_REPAIR_LAG = """
local function field(arr, name)
  for i = 1, #arr, 2 do if arr[i] == name then return arr[i + 1] end end
  return nil
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  if field(g, 'name') == ARGV[1] then
    if field(g, 'entries-read') then return 0 end
    local last = field(g, 'last-delivered-id')
    local added = field(redis.call('XINFO', 'STREAM', KEYS[1]), 'entries-added')
    local undelivered = #redis.call('XRANGE', KEYS[1], '(' .. last, '+')
    redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], last, 'ENTRIESREAD', added - undelivered)
    return 1
  end
end
return 0
"""

_CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[1], 'error', 'cancelled before start')
  return '+cancelled'
end
if status == 'running' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1')
  return '+requested'
end
return status
"""


# --------------------------------------------------------------------------- the queue


class Queue:
    """The queue API shared by the CLI, the agent runtime and the mirror."""

    def __init__(self, client: Any, *, prefix: str = "raibid", url: str = "redis://?", max_deliveries: int = 3,
                 min_idle_ms: int = 300_000, log_ttl: int = 7 * 24 * 3600, log_maxlen: int = 100_000,
                 default_agent: str = "generic", default_timeout: int = 3600) -> None:
        self.r = client
        self.url = url
        self.keys = Keys(prefix)
        self.max_deliveries = max_deliveries
        self.min_idle_ms = min_idle_ms
        self.log_ttl = log_ttl
        self.log_maxlen = log_maxlen
        self.default_agent = default_agent
        self.default_timeout = default_timeout
        self._groups_ok: set[str] = set()
        self.lag_repaired: set[str] = set()  # streams whose lost entries-read this instance restored
        self._scripts: dict[str, Any] = {}

    @classmethod
    def from_app(cls, app: Application) -> Queue:
        cfg = app.cfg
        url, _ = app.redis_endpoint()
        return cls(app.redis, prefix=cfg.redis.prefix, url=url, max_deliveries=cfg.queue.max_deliveries,
                   min_idle_ms=cfg.queue.min_idle * 1000, log_ttl=cfg.queue.log_ttl,
                   log_maxlen=cfg.queue.log_maxlen, default_agent=cfg.agents.default_type,
                   default_timeout=cfg.queue.default_timeout)

    def _script(self, name: str, body: str) -> Any:
        if name not in self._scripts:
            self._scripts[name] = self.r.register_script(body)
        return self._scripts[name]

    # ------------------------------------------------------------------ setup
    @_mapped
    def init(self, agents: Iterable[str]) -> list[str]:
        """Create each stream's consumer group (at id 0, so earlier entries are kept)."""
        created = []
        for agent in agents:
            validate_agent(agent)
            if self._ensure_group(self.keys.stream(agent)):
                created.append(agent)
            self.r.sadd(self.keys.agents, agent)
        return created

    def _ensure_group(self, stream: str) -> bool:
        import redis

        if stream in self._groups_ok:
            return False
        try:
            # 0, not $: a job queued before the group existed must not be lost.
            self.r.xgroup_create(stream, GROUP, id="0", mkstream=True)
            created = True
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
            created = False
            self.repair_lag(stream)
        self._groups_ok.add(stream)
        return created

    def repair_lag(self, stream: str) -> bool:
        """Restore the group's entries-read when Redis lost it (see _REPAIR_LAG); True if repaired."""
        repaired = bool(self._script("repair", _REPAIR_LAG)(keys=[stream], args=[GROUP]))
        if repaired:
            self.lag_repaired.add(stream)
        return repaired

    # ------------------------------------------------------------------ submit
    def _new_job(self, spec: JobSpec, *, attempt: int = 1, retry_of: str | None = None,
                 submitted_at: str | None = None, job_id: str | None = None) -> Job:
        return Job(id=job_id or new_job_id(), repo=spec.repo, ref=spec.ref, commit=spec.commit,
                   agent=spec.agent or self.default_agent, command=spec.command, env=dict(spec.env),
                   timeout=spec.timeout or self.default_timeout, source=spec.source,
                   submitted_at=submitted_at or now_rfc3339(), status="queued", attempt=attempt, retry_of=retry_of)

    def _write(self, jobs: list[Job], *, batch: int = 200) -> None:
        """Persist new jobs (grouped by agent type), one script call per batch.

        Batches are sent as soon as each is built and the replies read at the end,
        so Redis runs batch k while this process encodes batch k+1.
        """
        import redis

        by_agent: dict[str, list[Job]] = {}
        for job in jobs:
            by_agent.setdefault(job.agent, []).append(job)
        for agent in by_agent:
            self._ensure_group(self.keys.stream(agent))
        sha = self._submit_sha()
        sent: list[list[Job]] = []
        conn = self.r.connection_pool.get_connection()
        try:
            for agent, group in by_agent.items():
                head = [self.keys.stream(agent), self.keys.index, self.keys.agents]
                for start in range(0, len(group), batch):
                    chunk = group[start:start + batch]
                    first = chunk[0]
                    score = str(int(parse_time(first.submitted_at).timestamp() * 1000))  # type: ignore[union-attr]
                    keys = head + [self.keys.job(j.id) for j in chunk]
                    args = [_SEP.join((j.id, j.repo, j.ref, j.commit or "", j.command or "",
                                       json.dumps(j.env, sort_keys=True) if j.env else "{}", str(j.timeout),
                                       str(j.attempt), j.retry_of or "")) for j in chunk]
                    conn.send_command("EVALSHA", sha, len(keys), *keys, agent, first.submitted_at, score,
                                      first.source, *args)
                    sent.append(chunk)
            done = 0
            failure: Exception | None = None
            for chunk in sent:
                try:
                    sids = conn.read_response()
                except redis.ResponseError as e:
                    failure = failure or e
                    continue
                for job, sid in zip(chunk, sids, strict=True):
                    job.stream_id = sid
                done += len(chunk)
        except BaseException:
            conn.disconnect()  # replies may be pending: never reuse this connection
            raise
        finally:
            self.r.connection_pool.release(conn)
        if failure is not None:
            raise QueueError(f"submitted {done} of {len(jobs)} jobs; Redis refused the rest: {failure}",
                             hint="jobs without a stream_id in --json output were not queued")

    def _submit_sha(self) -> str:
        # Loaded on every write: idempotent, and survives a Redis restart (empty script cache).
        return self.r.script_load(_SUBMIT)

    @_mapped
    def submit(self, spec: JobSpec) -> Job:
        spec.validate()
        job = self._new_job(spec)
        self._write([job])
        return job

    @_mapped
    def submit_many(self, specs: list[JobSpec], *, batch: int = 200) -> list[Job]:
        """Validate every spec first (nothing is written if one is bad), then submit in batches."""
        for spec in specs:
            spec.validate()
        now = now_rfc3339()
        ids = new_job_ids(len(specs))
        jobs = [self._new_job(s, submitted_at=now, job_id=i) for s, i in zip(specs, ids, strict=True)]
        self._write(jobs, batch=batch)
        return jobs

    # ------------------------------------------------------------------ read
    @_mapped
    def get(self, job_id: str) -> Job:
        h = self.r.hgetall(self.keys.job(job_id))
        if not h:
            raise NotFound(f"no job {job_id!r}", hint="`raibid queue list` shows recent jobs")
        return Job.from_hash(h)

    @_mapped
    def list(self, *, status: str | None = None, agent: str | None = None, limit: int = 50) -> list[Job]:
        """Newest first, from the index; fetches records in pipelined batches."""
        if status and status not in STATUSES:
            raise UsageError(f"unknown status {status!r}", hint="one of: " + ", ".join(STATUSES))
        out: list[Job] = []
        start, batch = 0, max(limit, 100)
        while len(out) < limit:
            ids = self.r.zrevrange(self.keys.index, start, start + batch - 1)
            if not ids:
                break
            pipe = self.r.pipeline(transaction=False)
            for i in ids:
                pipe.hgetall(self.keys.job(i))
            for h in pipe.execute():
                if not h:
                    continue
                job = Job.from_hash(h)
                if (status and job.status != status) or (agent and job.agent != agent):
                    continue
                out.append(job)
                if len(out) >= limit:
                    break
            start += batch
        return out

    @_mapped
    def logs(self, job_id: str, after: str = "-", count: int | None = None) -> list[tuple[str, str]]:
        """(entry id, line) pairs after ``after`` (exclusive unless '-')."""
        start = "-" if after == "-" else f"({after}"
        return [(eid, f.get("line", "")) for eid, f in self.r.xrange(self.keys.log(job_id), start, "+", count=count)]

    @_mapped
    def wait_logs(self, job_id: str, after: str, block_ms: int) -> list[tuple[str, str]]:
        res = self.r.xread({self.keys.log(job_id): after}, block=block_ms, count=1000)
        return [(eid, f.get("line", "")) for _, entries in res for eid, f in entries]

    # ------------------------------------------------------------------ control
    @_mapped
    def cancel(self, job_id: str) -> str:
        """'cancelled' for a queued job; 'requested' for a running one (the agent polls)."""
        res = self._script("cancel", _CANCEL)(keys=[self.keys.job(job_id)], args=[now_rfc3339()])
        if res == "missing":
            raise NotFound(f"no job {job_id!r}")
        if not res.startswith("+"):
            raise UsageError(f"job {job_id} is already {res}; nothing to cancel")
        return res[1:]

    @_mapped
    def retry(self, job_id: str) -> Job:
        """Enqueue a failed, dead or cancelled job again as a new attempt linked to the old one."""
        old = self.get(job_id)
        if old.status not in RETRYABLE:
            raise UsageError(f"job {job_id} is {old.status}; only failed, dead or cancelled jobs can be retried")
        spec = JobSpec(repo=old.repo, ref=old.ref, commit=old.commit, agent=old.agent, command=old.command,
                       env=old.env, timeout=old.timeout, source=old.source)
        job = self._new_job(spec, attempt=old.attempt + 1, retry_of=old.id)
        self._write([job])
        self.r.hset(self.keys.job(old.id), "retried_by", job.id)
        return job

    # ------------------------------------------------------------------ worker API
    @_mapped
    def claim(self, agent: str, consumer: str, *, block_ms: int = 0) -> Claim | None:
        """Take one job: stale entries first (XAUTOCLAIM), then new ones (XREADGROUP).

        ``block_ms`` > 0 waits that long for new work; 0 returns at once.
        """
        validate_agent(agent)
        stream = self.keys.stream(agent)
        self._ensure_group(stream)
        for _ in range(1000):  # skipped entries (cancelled, stale) do not count as work
            entry = self._reclaim_one(stream, consumer)
            if entry is None:
                res = self.r.xreadgroup(GROUP, consumer, {stream: ">"}, count=1,
                                        block=block_ms if block_ms > 0 else None)
                if not res or not res[0][1]:
                    return None
                entry = res[0][1][0]
            sid, data = entry
            job_id = (data or {}).get("job")
            if not job_id:
                self.r.xack(stream, GROUP, sid)
                continue
            state = self._script("start", _START)(
                keys=[stream, self.keys.job(job_id), self.keys.dead],
                args=[GROUP, sid, consumer, now_rfc3339(), self.max_deliveries, job_id])
            if state == "ok":
                return Claim(self.get(job_id), stream, sid, consumer)
        return None

    def _reclaim_one(self, stream: str, consumer: str) -> tuple[str, dict] | None:
        start = "0-0"
        while True:
            res = self.r.xautoclaim(stream, GROUP, consumer, self.min_idle_ms, start_id=start, count=1)
            next_start, entries = res[0], res[1]
            for sid in (res[2] if len(res) > 2 else []):  # deleted under the PEL (Redis 7)
                self.r.xack(stream, GROUP, sid)
            for sid, data in entries:
                if data is None:  # trimmed away underneath the PEL
                    self.r.xack(stream, GROUP, sid)
                    continue
                return sid, data
            if next_start == "0-0":
                return None
            start = next_start

    @_mapped
    def heartbeat(self, claim: Claim) -> bool:
        """Keep the entry ours (resets its idle time); True when a cancel was requested."""
        res = self._script("heartbeat", _HEARTBEAT)(
            keys=[claim.stream, self.keys.job(claim.job.id)],
            args=[GROUP, claim.stream_id, claim.consumer, now_rfc3339()])
        if res == -1:
            raise LostJob(f"job {claim.job.id} is no longer held by {claim.consumer}")
        return res == 1

    @_mapped
    def append_log(self, job_id: str, lines: Iterable[str]) -> int:
        key = self.keys.log(job_id)
        pipe = self.r.pipeline(transaction=False)
        n = 0
        for line in lines:
            pipe.xadd(key, {"line": line}, maxlen=self.log_maxlen, approximate=True)
            n += 1
        if n:
            pipe.execute()
        return n

    @_mapped
    def finish(self, claim: Claim, status: str, *, exit_code: int | None = None, error: str | None = None) -> bool:
        """Record a terminal state and ack. False when this worker had lost the job."""
        if status not in TERMINAL - {"dead"}:
            raise UsageError(f"cannot finish a job as {status!r}")
        res = self._script("finish", _FINISH)(
            keys=[claim.stream, self.keys.job(claim.job.id), self.keys.log(claim.job.id)],
            args=[GROUP, claim.stream_id, claim.consumer, now_rfc3339(), status,
                  "" if exit_code is None else str(exit_code), error or "", self.log_ttl])
        return res == 1

    @_mapped
    def release(self, claim: Claim, reason: str) -> str:
        """Give a job back after a transient failure: requeued, or dead-lettered when out of deliveries."""
        return self._requeue(claim.stream, claim.stream_id, claim.job.id, reason)

    def _requeue(self, stream: str, sid: str, job_id: str, reason: str) -> str:
        return self._script("requeue", _REQUEUE)(
            keys=[stream, self.keys.job(job_id), self.keys.dead],
            args=[GROUP, sid, reason, now_rfc3339(), self.max_deliveries, job_id])

    # ------------------------------------------------------------------ maintenance
    def agent_types(self, extra: Iterable[str] = ()) -> list[str]:
        return sorted(set(self.r.smembers(self.keys.agents)) | set(extra))

    @_mapped
    def reap(self, agents: Iterable[str] = (), *, min_idle_ms: int | None = None) -> ReapResult:
        """Requeue (or dead-letter) entries whose worker stopped heartbeating.

        Requeueing adds a fresh entry, so KEDA's lag sees the job again and starts
        an agent for it; a stuck pending entry alone is invisible to lag scaling.
        """
        idle = self.min_idle_ms if min_idle_ms is None else min_idle_ms
        result = ReapResult([], [], [])
        for agent in self.agent_types(agents):
            stream = self.keys.stream(agent)
            if not self.r.exists(stream):
                continue
            self._ensure_group(stream)
            self.repair_lag(stream)
            if stream in self.lag_repaired:
                result.lag_repaired.append(agent)
            for p in self.r.xpending_range(stream, GROUP, min="-", max="+", count=10_000, idle=idle):
                sid = p["message_id"]
                entry = self.r.xrange(stream, sid, sid)
                job_id = entry[0][1].get("job") if entry else None
                if not job_id:
                    self.r.xack(stream, GROUP, sid)
                    result.acked.append(sid)
                    continue
                outcome = self._requeue(stream, sid, job_id,
                                        f"worker {p['consumer']} stopped heartbeating (idle {p['time_since_delivered']} ms)")
                {"requeued": result.requeued, "dead": result.dead_lettered}.get(outcome, result.acked).append(job_id)
        return result

    @_mapped
    def dlq_list(self, limit: int = 100) -> list[DeadLetter]:
        return [DeadLetter(eid, f.get("job", ""), f.get("reason", ""), f.get("stream", ""), f.get("at"))
                for eid, f in self.r.xrevrange(self.keys.dead, "+", "-", count=limit)]

    @_mapped
    def dlq_retry(self, job_id: str) -> Job:
        entries = [d for d in self.dlq_list(limit=100_000) if d.job_id == job_id]
        if not entries:
            raise NotFound(f"job {job_id!r} is not in the dead-letter queue")
        job = self.retry(job_id)
        self.r.xdel(self.keys.dead, *[d.entry_id for d in entries])
        return job

    @_mapped
    def dlq_purge(self) -> int:
        n = self.r.xlen(self.keys.dead)
        self.r.delete(self.keys.dead)
        return n

    @_mapped
    def purge(self) -> int:
        """Delete every key under the prefix: streams, jobs, logs, index. Dangerous."""
        n = 0
        batch: list[str] = []
        for key in self.r.scan_iter(match=f"{self.keys.prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                n += self.r.unlink(*batch)
                batch.clear()
        if batch:
            n += self.r.unlink(*batch)
        self._groups_ok.clear()
        return n

    # ------------------------------------------------------------------ stats
    @_mapped
    def group_info(self, stream: str) -> dict | None:
        """The raibid-agents entry of XINFO GROUPS (name, pending, lag, ...), or None without the group."""
        return next((g for g in self.r.xinfo_groups(stream) if g["name"] == GROUP), None)

    @_mapped
    def stats(self, pools: dict[str, tuple[int, int]]) -> QueueStats:
        """Per agent stream: length, lag, pending, consumers, oldest queued age, and KEDA's view.

        ``pools`` maps agent type to (lagCount, max replicas).
        """
        version = str(self.r.info("server").get("redis_version", "0"))
        lag_supported = int(version.split(".")[0]) >= 7
        warnings = [] if lag_supported else [
            f"Redis {version} < 7: XINFO GROUPS has no lag, so KEDA cannot scale on lag; upgrade Redis"]
        out = []
        for agent in self.agent_types(pools):
            stream = self.keys.stream(agent)
            lag_count, max_replicas = pools.get(agent, (1, 1))
            length = self.r.xlen(stream)
            group = None
            if length or self.r.exists(stream):
                group = self.group_info(stream)
            consumers: list[ConsumerInfo] = []
            lag: int | None = None
            pending = 0
            oldest_at = None
            if group is not None:
                pending = int(group.get("pending", 0))
                lag = group.get("lag") if lag_supported else None
                lag = int(lag) if lag is not None else None
                if lag_supported and lag is None:
                    warnings.append(f"{stream}: Redis reports no lag (entries-read lost, e.g. after an AOF "
                                    f"reload), so KEDA sees 0; `raibid queue reap` repairs it")
                consumers = [ConsumerInfo(c["name"], int(c["pending"]), int(c["idle"]))
                             for c in self.r.xinfo_consumers(stream, GROUP)]
                last = group.get("last-delivered-id", "0-0")
                nxt = self.r.xrange(stream, f"({last}", "+", count=1)
                if nxt:
                    oldest_at = int(nxt[0][0].split("-")[0])
            elif length:
                warnings.append(f"{stream} has no consumer group {GROUP}: KEDA falls back to XLEN; "
                                f"run `raibid queue init`")
            age = None
            oldest = None
            if oldest_at is not None:
                when = dt.datetime.fromtimestamp(oldest_at / 1000, dt.UTC)
                oldest = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
                age = max(0.0, (dt.datetime.now(dt.UTC) - when).total_seconds())
            desired = keda_desired(lag, lag_count, max_replicas) if lag is not None else None
            out.append(StreamStats(agent, stream, length, lag, pending, consumers, oldest, age, group is not None,
                                   lag_count, max_replicas, desired))
        return QueueStats(out, self.r.xlen(self.keys.dead), version, lag_supported, warnings)


def keda_desired(lag: int, lag_count: int, max_replicas: int) -> int:
    """KEDA's redis-streams lag mode: min(max, ceil(lag / lagCount)); active when lag > 0."""
    if lag <= 0:
        return 0
    return min(max_replicas, math.ceil(lag / max(lag_count, 1)))
