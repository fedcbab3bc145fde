"""Redis and the queue: reachable, version >= 7, each agent stream with its group and a valid lag."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from raibid.doctor.checks import Check, Status
from raibid.errors import RaibidError

if TYPE_CHECKING:
    from raibid.app import Application


def redis_checks(app: Application) -> Iterable[Check]:
    from raibid.errors import redact_url
    from raibid.queue import redis_errors

    try:
        url, _ = app.redis_endpoint()
        with redis_errors(url):
            info = app.redis.info("server")
    except RaibidError as e:
        yield Check("redis", Status.FAIL, e.message, e.hint or "check redis.url and the password env var")
        return
    version = str(info.get("redis_version", "0"))
    yield Check("redis", Status.OK, f"{redact_url(url)} (redis {version})")
    major = int(version.split(".")[0] or 0)
    if major >= 7:
        yield Check("redis-version", Status.OK, f"{version} >= 7 (XINFO lag for KEDA)")
    else:
        yield Check("redis-version", Status.FAIL, f"{version} < 7",
                    "KEDA's lag-based scaling from zero needs Redis 7+")


def queue_checks(app: Application) -> Iterable[Check]:
    """Each agent stream exists with the consumer group, and Redis still knows its lag."""
    from raibid.queue import GROUP, redis_errors

    try:
        url, _ = app.redis_endpoint()
        q = app.queue
        with redis_errors(url):
            for agent in sorted(app.agent_pools()):
                stream = q.keys.stream(agent)
                name = f"queue {agent}"
                if not app.redis.exists(stream):
                    yield Check(name, Status.WARN, f"{stream} does not exist yet",
                                "`raibid queue init` creates it (submit does too)", required=False)
                    continue
                group = q.group_info(stream)
                if group is None:
                    yield Check(name, Status.FAIL, f"{stream} has no consumer group {GROUP}",
                                "KEDA would fall back to XLEN; run `raibid queue init`")
                    continue
                check = q.check_lag(stream)  # repairs a lag that is not the true one
                if check.repaired:
                    shown = "none" if check.reported is None else check.reported
                    yield Check(name, Status.WARN, f"{stream}: Redis reported lag {shown} but {check.true} "
                                f"entries were undelivered; repaired (entries-read set to match)",
                                "happens after an AOF reload; `raibid queue reap` from cron repairs it too",
                                required=False)
                else:
                    yield Check(name, Status.OK, f"{stream}: group {GROUP}, lag {check.true} (true), "
                                f"pending {group['pending']}")
    except RaibidError:
        return  # the redis check already reported why Redis is unusable
