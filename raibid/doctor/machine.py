"""The machine: architecture, CPU, memory, disk."""

from __future__ import annotations

import os
import platform
import shutil
from collections.abc import Iterable
from typing import TYPE_CHECKING

from raibid.doctor.checks import Check, Status

if TYPE_CHECKING:
    from raibid.app import Application


def machine_checks(app: Application) -> Iterable[Check]:
    arch = platform.machine()
    if arch in ("aarch64", "arm64"):
        yield Check("architecture", Status.OK, arch, required=False)
    else:
        yield Check("architecture", Status.WARN, arch,
                    "raibid targets the DGX Spark (arm64); images must exist for this architecture",
                    required=False)
    cpus = os.cpu_count() or 0
    yield Check("cpu", Status.OK if cpus >= 4 else Status.WARN, f"{cpus} cores",
                "" if cpus >= 4 else "fewer than 4 cores: builds will queue", required=False)
    mem = _mem_total_bytes()
    if mem is None:
        yield Check("memory", Status.SKIP, "unknown (no /proc/meminfo)", required=False)
    else:
        gib = mem / 2**30
        yield Check("memory", Status.OK if gib >= 8 else Status.WARN, f"{gib:.1f} GiB",
                    "" if gib >= 8 else "under 8 GiB: Gitea, Redis and agents will compete", required=False)
    path = "/var/lib/rancher" if os.path.isdir("/var/lib/rancher") else os.getcwd()
    free = shutil.disk_usage(path).free / 2**30
    yield Check("disk", Status.OK if free >= 20 else Status.WARN, f"{free:.1f} GiB free on {path}",
                "" if free >= 20 else "under 20 GiB free: images and repos will fill it", required=False)


def _mem_total_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
