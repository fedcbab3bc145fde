"""Sizes as Kubernetes and Redis spell them, in bytes: one parser for each spelling."""

from __future__ import annotations

import re

_K8S = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
        "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
# redis.conf units: k/m/g are powers of 1000, kb/mb/gb powers of 1024, case-insensitive.
_REDIS = {"": 1, "k": 10**3, "kb": 2**10, "m": 10**6, "mb": 2**20, "g": 10**9, "gb": 2**30}


def quantity_bytes(text: str) -> int:
    """A Kubernetes memory quantity (``2Gi``, ``512M``, ``1073741824``) in bytes; ValueError otherwise."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?", text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a memory quantity (e.g. 2Gi, 512Mi)")
    return int(float(m.group(1)) * _K8S[m.group(2) or ""])


def redis_bytes(text: str) -> int:
    """A redis.conf memory size (``1536mb``, ``1gb``, ``100000``) in bytes; ValueError otherwise."""
    m = re.fullmatch(r"(\d+)(k|kb|m|mb|g|gb)?", text.strip().lower())
    if not m:
        raise ValueError(f"{text!r} is not a Redis memory size (e.g. 1536mb, 1gb)")
    return int(m.group(1)) * _REDIS[m.group(2) or ""]
