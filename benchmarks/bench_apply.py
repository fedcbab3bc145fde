"""Re-applying an unchanged cluster: raibid against `kubectl apply --server-side`.

Usage: python benchmarks/bench_apply.py [--rounds N]

Both run as subprocesses against the same Kubernetes API fake (tests/harness),
interleaved, after one warm-up run each so both use their discovery caches.
Reported: requests each run sends (from the fake's log) and wall time.
The fake runs without authentication here because kubectl sends no bearer
token over plain http; kubectl runs with --validate=false because the fake
serves no OpenAPI document.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raibid.cluster.apply import plan  # noqa: E402
from raibid.cluster.client import Kube  # noqa: E402
from raibid.cluster.render import render, to_yaml  # noqa: E402
from raibid.config import load_config  # noqa: E402
from tests.harness.kubefake import K3sController, KubeFake  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    kubectl = shutil.which("kubectl")
    if not kubectl:
        sys.exit("kubectl not found")
    raibid = [sys.executable, "-m", "raibid"]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        fake = KubeFake(token=None).start()
        K3sController(fake)
        kc = fake.write_kubeconfig(d / "kubeconfig")
        env = {**os.environ, "KUBECONFIG": str(kc), "HOME": str(d), "XDG_CACHE_HOME": str(d / "cache"),
               "XDG_CONFIG_HOME": str(d / "config")}
        env.pop("RAIBID_CONFIG", None)
        subprocess.run([*raibid, "cluster", "up", "--no-wait"], env=env, check=True, capture_output=True, cwd=d)
        # The same manifests `cluster up` applies: rendered with the cluster's live passwords.
        cfg = load_config()
        manifests, _ = plan(Kube.from_kubeconfig(str(kc)), lambda secrets: render(cfg, secrets=secrets), "raibid-ci")
        manifest = d / "manifests.yaml"
        manifest.write_text(to_yaml(manifests))
        cases = {
            "kubectl apply --server-side": [kubectl, "apply", "--server-side", "--validate=false",
                                            "--field-manager=raibid", "-f", str(manifest)],
            "raibid cluster up --no-wait": [*raibid, "cluster", "up", "--no-wait"],
        }
        for cmd in cases.values():  # warm-up: discovery caches
            subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=d)
        cases["python -c 'import kubernetes'"] = [sys.executable, "-c", "import kubernetes"]
        times: dict[str, list[float]] = {k: [] for k in cases}
        reqs: dict[str, list[int]] = {k: [] for k in cases}
        for _ in range(args.rounds):
            for name, cmd in cases.items():
                fake.clear_log()
                t0 = time.perf_counter()
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=d)
                times[name].append(time.perf_counter() - t0)
                if out.returncode != 0:
                    sys.exit(f"{name} failed: {out.stderr}")
                reqs[name].append(len(fake.requests()))
                writes = [r for r in fake.requests() if r.method != "GET"]
                assert all(r.status == 200 for r in writes), f"{name}: unexpected status"
        inproc = in_process(env, d, args.rounds)
        fake.stop()
    base = statistics.median(times["kubectl apply --server-side"])
    print(f"{'command':32} {'requests':>9} {'median ms':>10} {'x kubectl':>10}")
    for name in cases:
        med = statistics.median(times[name])
        print(f"{name:32} {statistics.median(reqs[name]):9.0f} {med * 1000:10.1f} {med / base:10.2f}")
    med = statistics.median(inproc)
    print(f"{'raibid up, in-process (no startup)':32} {'':9} {med * 1000:10.1f} {med / base:10.2f}")


def in_process(env: dict, cwd: Path, rounds: int) -> list[float]:
    """The same `cluster up --no-wait` called in this process: the engine without interpreter start-up."""
    from click.testing import CliRunner

    from raibid.cli import cli

    old = dict(os.environ)
    os.environ.update(env)
    os.chdir(cwd)
    try:
        runner = CliRunner()
        runner.invoke(cli, ["cluster", "up", "--no-wait"], catch_exceptions=False)  # warm imports
        out = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            res = runner.invoke(cli, ["cluster", "up", "--no-wait"], catch_exceptions=False)
            out.append(time.perf_counter() - t0)
            assert res.exit_code == 0, res.output
        return out
    finally:
        os.environ.clear()
        os.environ.update(old)


if __name__ == "__main__":
    main()
