"""`raibid top`: a live, read-only dashboard of the queue, agent pools, jobs and cluster.

``collect`` has one collector per backend (Redis, Kubernetes, Gitea), each with
its own error state, joined into a ``model.Snapshot`` of plain dataclasses;
``redisread`` holds the pipelined, read-only job-index reads; ``render`` draws a
Snapshot with Rich (full or compact) or as plain text; ``live`` is the refresh
loop. See docs/top.md.
"""

from __future__ import annotations

from raibid.top.collect import Dashboard, GiteaCollector, KubeCollector, RedisCollector
from raibid.top.model import Snapshot

__all__ = ["Dashboard", "GiteaCollector", "KubeCollector", "RedisCollector", "Snapshot"]
