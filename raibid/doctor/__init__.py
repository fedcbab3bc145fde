"""Health checks for `raibid doctor`, registered per domain.

Each check reports a status, a detail and a hint. Checks come from providers
(functions taking the Application), one module per domain; a new feature adds
its provider to ``PROVIDERS``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from raibid.doctor.checks import Check, Provider, Status
from raibid.doctor.cluster import cluster_checks
from raibid.doctor.gitea import gitea_checks
from raibid.doctor.images import image_checks
from raibid.doctor.machine import machine_checks
from raibid.doctor.queue import queue_checks, redis_checks

if TYPE_CHECKING:
    from raibid.app import Application

PROVIDERS: list[Provider] = [machine_checks, cluster_checks, redis_checks, queue_checks, gitea_checks, image_checks]


def run_checks(app: Application, providers: Iterable[Provider] | None = None) -> list[Check]:
    checks: list[Check] = []
    for provider in providers or PROVIDERS:
        checks.extend(provider(app))
    return checks


__all__ = ["PROVIDERS", "Check", "Provider", "Status", "run_checks"]
