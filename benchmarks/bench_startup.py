"""Startup time of `raibid --help` against `python -c "import click"`, in one script.

Usage: python benchmarks/bench_startup.py [--runs N]
Both commands run interleaved in the same process loop, so machine noise hits
them alike; the ratio is the figure to quote.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

CASES = {
    "python -c 'import click'": [sys.executable, "-c", "import click"],
    "raibid --help": [sys.executable, "-m", "raibid", "--help"],
    "raibid completion request": [sys.executable, "-m", "raibid"],
    "python -c 'import kubernetes'": [sys.executable, "-c", "import kubernetes.client, kubernetes.dynamic"],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    env = {**os.environ}
    comp_env = {**env, "_RAIBID_COMPLETE": "bash_complete", "COMP_WORDS": "raibid con", "COMP_CWORD": "1"}
    times: dict[str, list[float]] = {k: [] for k in CASES}
    for _ in range(args.runs):
        for name, cmd in CASES.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                           env=comp_env if "completion" in name else env)
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["python -c 'import click'"])
    print(f"{'command':32} {'median ms':>10} {'p90 ms':>8} {'x click':>8}")
    for name, ts in times.items():
        med = statistics.median(ts)
        p90 = sorted(ts)[int(0.9 * (len(ts) - 1))]
        print(f"{name:32} {med * 1000:10.1f} {p90 * 1000:8.1f} {med / base:8.2f}")


if __name__ == "__main__":
    main()
