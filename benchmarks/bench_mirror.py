"""Mirroring 100 repos: raibid's unchanged fast path against a naive fetch-and-push, and a first full sync.

Usage: python benchmarks/bench_mirror.py [--repos 100] [--rounds 3] [--jobs 4] [--prs 0]

"GitHub" is the GitHub API fake with its smart-HTTP git server, "Gitea" the Gitea
fake with its own (tests/harness), all on 127.0.0.1 in this process. Reported:

- first full sync: `raibid mirror sync --jobs N` into an empty Gitea and cache;
- unchanged: `raibid mirror sync --jobs N` when nothing changed, interleaved with
  the baseline, a naive sequential loop doing, per repo, `git fetch --prune` into
  an already-warm bare cache and `git push --prune` of heads and tags to the target
  (what a cron script around plain git does). Both run as subprocesses with the
  same credentials in the env; the ratio is raibid / naive.

PR discovery (``mirror.pull_requests``, on by default) is part of every raibid run: one
``GET /repos/{o}/{r}/pulls?state=open`` per repo. ``--prs N`` opens N same-repo pull requests
per repo first, so the first sync mirrors their ``refs/pull/<n>/head`` and the unchanged runs
compare them (still no git work).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raibid.gitcreds import git_env  # noqa: E402
from tests.harness.giteafake import GiteaFake  # noqa: E402
from tests.harness.githttp import GitHTTPServer  # noqa: E402
from tests.harness.githubfake import GitHubFake  # noqa: E402

GITEA_TOKEN = "bench-gitea-token-0123456789"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repos", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--prs", type=int, default=0, help="open pull requests per repo")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        github = GitHubFake(d / "github").start()
        github.add_org("bench")
        for i in range(args.repos):
            github.add_repo("bench", f"r{i:03d}", branches={"main": {"README.md": f"# {i}\n"},
                                                           "dev": {"dev.txt": str(i)}})
            github.tag("bench", f"r{i:03d}", "v1")
            for n in range(args.prs):
                github.commit("bench", f"r{i:03d}", f"pr{n}", {"pr.txt": f"{i}-{n}\n"})
                github.open_pull("bench", f"r{i:03d}", f"pr{n}")
        git_server = GitHTTPServer(d / "gitea-git").start()
        gitea = GiteaFake(git_server).start()
        gitea.add_token("raibid-admin", GITEA_TOKEN)
        (d / "raibid.yaml").write_text(f"mirror:\n  github_api: {github.url}\n  target_org: mirrors\n"
                                       f"  orgs: [{{name: bench}}]\n  trigger: {{enabled: false}}\n")
        env = {**os.environ, "HOME": str(d), "XDG_CACHE_HOME": str(d / "cache"), "XDG_CONFIG_HOME": str(d / "cfg"),
               "RAIBID_CONFIG": str(d / "raibid.yaml"), "RAIBID_GITEA_URL": gitea.url,
               "RAIBID_GITEA_TOKEN": GITEA_TOKEN, "GITHUB_TOKEN": github.token,
               "RAIBID_REDIS_URL": "redis://127.0.0.1:1/0", "PYTHONPATH": str(ROOT)}
        raibid = [sys.executable, "-m", "raibid", "-q", "mirror", "sync", "--jobs", str(args.jobs), "--no-trigger"]

        def run_raibid() -> float:
            t0 = time.perf_counter()
            proc = subprocess.run(raibid, env=env, cwd=d, capture_output=True, text=True)
            elapsed = time.perf_counter() - t0
            if proc.returncode != 0:
                sys.exit(f"raibid mirror sync failed ({proc.returncode}): {proc.stderr[-2000:]}")
            return elapsed

        first = run_raibid()
        fetches, pushes = github.git_fetches(), _pushes(git_server)
        # The naive baseline's warm cache: one bare clone per repo, made before timing.
        naive_cache = d / "naive"
        names = [f"r{i:03d}" for i in range(args.repos)]
        for n in names:
            src = github.git.url(f"bench/{n}")
            _git(["init", "--bare", "-q", str(naive_cache / f"{n}.git")], {})
            _git(["--git-dir", str(naive_cache / f"{n}.git"), "fetch", "-q", src, "+refs/heads/*:refs/heads/*",
                  "+refs/tags/*:refs/tags/*"], {src: github.token})

        def run_naive() -> float:
            t0 = time.perf_counter()
            for n in names:
                src, dst = github.git.url(f"bench/{n}"), git_server.url(f"mirrors/{n}")
                repo = str(naive_cache / f"{n}.git")
                _git(["--git-dir", repo, "fetch", "--prune", "-q", src, "+refs/heads/*:refs/heads/*",
                      "+refs/tags/*:refs/tags/*"], {src: github.token})
                _git(["--git-dir", repo, "push", "--prune", "-q", dst, "+refs/heads/*:refs/heads/*",
                      "+refs/tags/*:refs/tags/*"], {dst: GITEA_TOKEN})
            return time.perf_counter() - t0

        mirror_times, naive_times = [], []
        for _ in range(args.rounds):
            naive_times.append(run_naive())
            before = (github.git_fetches(), _pushes(git_server))
            mirror_times.append(run_raibid())
            if (github.git_fetches(), _pushes(git_server)) != before:
                sys.exit("the unchanged run fetched or pushed")
        m, n = statistics.median(mirror_times), statistics.median(naive_times)
        pulls = len(github.requests("GET"))
        print(f"repos: {args.repos} (2 branches + 1 tag each, {args.prs} open PRs), jobs: {args.jobs}, "
              f"rounds: {args.rounds}; GitHub API requests in all: {pulls}")
        print(f"first full sync (raibid, empty Gitea and cache): {first:.2f} s "
              f"({fetches} fetches, {pushes} pushes)")
        print("| run | median s | x naive |")
        print("|---|---|---|")
        print(f"| naive sequential fetch + push (baseline) | {n:.2f} | 1.00 |")
        print(f"| `raibid mirror sync --jobs {args.jobs}`, nothing changed | {m:.2f} | {m / n:.3f} |")
        gitea.stop()
        git_server.stop()
        github.stop()


def _pushes(server: GitHTTPServer) -> int:
    return sum(1 for method, path, _ in server.requests if method == "POST" and path.endswith("git-receive-pack"))


def _git(args: list[str], creds: dict[str, str]) -> None:
    subprocess.run(["git", *args], env=git_env(creds), check=True, capture_output=True)


if __name__ == "__main__":
    main()
