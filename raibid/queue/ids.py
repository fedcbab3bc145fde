"""Job ids: monotonic ULIDs (48-bit ms time + 80 random bits, Crockford base32, URL-safe)."""

from __future__ import annotations

import threading

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_B32_TO_CROCKFORD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _CROCKFORD)

_last_id = [0, 0]  # (ms, random part) of the last id made in this process
_lock = threading.Lock()  # threads (heartbeats, parallel mirror syncs) share _last_id


def new_job_ids(n: int = 1) -> list[str]:
    """``n`` ULIDs: 48-bit ms time + 80 random bits, Crockford base32, URL-safe.

    Ids of one call share the millisecond and count up from one random value, so
    they also sort in the order they were made (a monotonic ULID sequence).
    """
    import base64
    import os
    import time

    fresh = int.from_bytes(os.urandom(10), "big") >> 8  # headroom so +n never overflows 80 bits
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_id[0]:  # same (or an earlier, clock-stepped) millisecond: keep counting up
            ms, base = _last_id[0], _last_id[1] + 1
        else:
            base = fresh
        _last_id[0], _last_id[1] = ms, base + n - 1
    head = "".join(_CROCKFORD[(ms >> shift) & 31] for shift in range(45, -1, -5))
    b32, tr = base64.b32encode, _B32_TO_CROCKFORD
    return [head + b32((base + i).to_bytes(10, "big")).decode().translate(tr) for i in range(n)]


def new_job_id() -> str:
    return new_job_ids(1)[0]
