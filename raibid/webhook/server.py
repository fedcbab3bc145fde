"""Putting the receiver together from plain values, and serving it with waitress.

`raibid webhook serve` (in the pod) calls ``build`` then ``serve``; tests and the benchmark
call ``build`` and drive the WSGI app directly, or ``start_server`` on 127.0.0.1.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raibid.errors import RaibidError, UsageError
from raibid.webhook.mirrors import MirrorSet
from raibid.webhook.receiver import GiteaPulls, GiteaPushes, GitHubPulls, GitHubPushes, Receiver
from raibid.webhook.sync import BuildAfterSync, GiteaPullSync
from raibid.webhook.trigger import BuildTrigger, PostStatus, Reader
from raibid.webhook.worker import SyncFn, SyncWorker

if TYPE_CHECKING:
    from raibid.agents.trust import TrustPolicy
    from raibid.mirror.sync import Submit as EngineSubmit
    from raibid.queue import Job, JobSpec
    from raibid.webhook.deliveries import Deliveries
    from raibid.webhook.jobpage import JobPages

log = logging.getLogger("raibid.webhook")


@dataclass
class Service:
    receiver: Receiver
    worker: SyncWorker | None

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()


def build(*, secret: str, submit: Callable[[JobSpec], tuple[Job, bool]], mirrors: MirrorSet, branches: str,
          agent: str, policy: TrustPolicy | None = None, trigger_enabled: bool = True,
          overrides: dict[str, str] | None = None,
          sync: SyncFn | None = None, pull: GiteaPullSync | None = None,
          engine: Callable[[EngineSubmit | None], SyncFn] | None = None, unavailable: str = "no sync configured",
          max_body: int = 1 << 20, threads: int = 2, max_pending: int = 256,
          deliveries: Deliveries | None = None, pages: JobPages | None = None, read: Reader | None = None,
          post_status: PostStatus | None = None, pull_requests: bool = True) -> Service:
    """The receiver and its started background worker (none without a way to sync).

    GitHub pushes sync through ``engine`` (given the enqueue function for its trigger, None
    when triggers are off: it builds what it moves), or through ``sync`` followed by
    ``BuildAfterSync`` (pull mode: ``pull`` waits for Gitea to have the commit). Every job goes
    to the pool ``policy`` (``agents.trusted``; None trusts nothing) picks for its repo.
    ``deliveries`` dedupes GitHub deliveries by id (a redelivery does nothing). ``pages`` serves
    GET /jobs/... (none: those paths answer 404). ``read`` reads
    ``.raibid.yml`` at a commit (`raibid.webhook.trigger.gitea_reader`; the push-mode engine reads its
    bare cache), ``post_status`` is `Queue.post_status` for a malformed file's ``error`` status.
    Pull requests take the same paths (``pull_requests``: ``mirror.pull_requests``, for GitHub PRs).
    """
    if not secret:
        raise UsageError("the webhook secret is empty")
    trigger = BuildTrigger(submit, branches=branches, agent=agent, overrides=overrides, policy=policy,
                           read=read, post_status=post_status)
    worker = None
    after = None
    if engine is not None:
        sync = engine(trigger.submit_for_engine if trigger_enabled else None)
    elif sync is not None and trigger_enabled:
        after = BuildAfterSync(trigger, mirrors, pull=pull)
    if sync is not None:
        worker = SyncWorker(sync, after, threads=threads, max_pending=max_pending).start()
    gitea = GiteaPushes(trigger) if trigger_enabled else None
    gitea_pulls = GiteaPulls(trigger) if trigger_enabled else None
    github_pulls = GitHubPulls(mirrors, worker, unavailable=unavailable, enabled=pull_requests and trigger_enabled)

    def health() -> dict[str, Any]:
        return {"sync": vars(worker.stats) if worker else None}

    receiver = Receiver(secret, gitea=gitea, github=GitHubPushes(mirrors, worker, unavailable=unavailable),
                        gitea_pulls=gitea_pulls, github_pulls=github_pulls, max_body=max_body, health=health,
                        deliveries=deliveries, pages=pages)
    return Service(receiver, worker)


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"invalid listen address {listen!r}: expected HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def create_server(app: Callable[..., Any], host: str, port: int, *, max_body: int, threads: int = 4) -> Any:
    """A waitress server, bound but not yet running (``port`` 0 picks a free one: see ``effective_port``).

    An address that cannot be used is a typed error, not a traceback: a host that does not
    resolve is a usage error (exit 2); a port in use or not allowed is a failure (exit 1).
    """
    import errno

    from waitress.server import create_server  # waitress's own name for it (its stubs omit the re-export)

    where = f"{host}:{port}"
    try:
        return create_server(app, host=host, port=port, threads=threads, ident="raibid-webhook",
                                      max_request_body_size=max_body, channel_timeout=30,
                                      clear_untrusted_proxy_headers=True)
    except ValueError:  # waitress: getaddrinfo found nothing for the host
        raise UsageError(f"cannot listen on {where}: the host does not resolve to a local address",
                         hint="use an IP address of this machine, 0.0.0.0 or 127.0.0.1 (--listen, webhook.listen)"
                         ) from None
    except OSError as e:
        why = {errno.EADDRINUSE: "the address is already in use", errno.EACCES: "permission denied",
               errno.EADDRNOTAVAIL: "the address is not on this machine"}.get(e.errno or 0, e.strerror or str(e))
        raise RaibidError(f"cannot listen on {where}: {why}",
                          hint="pick another port with --listen (or webhook.listen), or stop what holds it"
                          ) from None


def start_server(app: Callable[..., Any], host: str = "127.0.0.1", port: int = 0, *, max_body: int = 1 << 20,
                 threads: int = 4) -> tuple[Any, threading.Thread]:
    """Serve in a background thread; stop with ``server.close()`` then join the thread."""
    server = create_server(app, host, port, max_body=max_body, threads=threads)
    thread = threading.Thread(target=server.run, name="raibid-webhook-http", daemon=True)
    thread.start()
    return server, thread
