"""A hostile `.raibid.yml`, run by the real runtime as an unprivileged user, against real Redis and git.

The agent runs as uid 65534 (``setpriv``), with a real Redis password and a Gitea token in its
environment, its steps in the local step runner (a child process with a scrubbed environment).
The steps try every way we know to get a credential (env, every readable ``/proc/*/environ`` and
``cmdline``, the agent's ``/proc/<pid>/environ`` and memory, the files they can read), write what
they find to a loot directory, and use it: AUTH and FLUSHALL on Redis, a push to the GitOps config
repo. They print markup and OSC sequences, flood the log with 1 GiB and ask for a job secret from
an untrusted repo. The test then looks for every form of every secret in everything the build
could leave behind, and checks that the job was recorded, Redis is alive, and its memory stayed
far below the ``maxmemory`` set on it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from raibid.gitcreds import secret_forms
from raibid.queue import JobSpec, Queue
from tests.harness.githttp import GitHTTPServer
from tests.harness.redis_server import RedisServer

NOBODY = 65534
# The agent process as uid 65534. This interpreter may live where that user cannot read (here it is
# under /root, 0700), so neither an exec as 65534 nor its later imports of the standard library would
# work. The launcher, as root, opens the standard library's directory and points sys.path at it
# through /proc/self/fd (the process keeps that access); drops to 65534 for good (setgroups,
# setresgid, setresuid); and sets the dumpable flag back to 1, as an exec by that user would leave it
# (the kernel clears it on a UID change), so that the agent's own prctl(PR_SET_DUMPABLE, 0) is what
# the test checks. Then it runs the real `raibid agents run`. The secrets are in its environment
# from its exec, in /proc/<pid>/environ. The local step runner the agent starts is a new exec: of
# /usr/bin/python3 when 65534 cannot run this interpreter (it needs the standard library and
# raibid/agents/steprunner.py only).
LAUNCHER = r"""
import ctypes, os, sys, sysconfig
stdlib = sysconfig.get_path("stdlib")
fd = os.open(stdlib, os.O_RDONLY | os.O_DIRECTORY)
import raibid.cli
def via_fd(paths):
    return [p.replace(stdlib, f"/proc/self/fd/{fd}", 1) if p == stdlib or p.startswith(stdlib + "/") else p
            for p in paths]
sys.path[:] = via_fd(sys.path)
for module in list(sys.modules.values()):  # packages imported already (encodings, email, ...)
    if isinstance(getattr(module, "__path__", None), list):
        module.__path__[:] = via_fd(module.__path__)
sys.path_importer_cache.clear()
uid = int(sys.argv[1])
os.setgroups([])
os.setresgid(uid, uid, uid)
os.setresuid(uid, uid, uid)
assert os.getuid() == uid and os.geteuid() == uid and os.getgroups() == []
assert ctypes.CDLL(None).prctl(4, 1, 0, 0, 0) == 0  # PR_SET_DUMPABLE 1
if not os.access(sys.executable, os.X_OK):
    sys.executable = "/usr/bin/python3"
sys.argv = ["raibid", *sys.argv[2:]]
raibid.cli.main()
"""
# Made anew for each run, never written in this file: the build searches readable files for them, and a copy
# of this source (a checkout under /tmp, a log of an earlier run) must not count as a leak.
TOKEN = "gitea-agent-token-" + secrets.token_hex(8)
REDIS_PASSWORD = "redis-password-" + secrets.token_hex(8)
DEPLOY_KEY = "deploy-key-value-" + secrets.token_hex(8)
MAXMEMORY = 256 << 20
FLOOD = 1 << 30

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the agent as uid 65534")


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory uid 65534 can use (the tests' tmp_path is root's, 0700), removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix="raibid-hostile-"))
    d.chmod(0o755)
    for sub in ("work", "home", "loot"):
        (d / sub).mkdir()
        os.chown(d / sub, NOBODY, NOBODY)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", password=REDIS_PASSWORD).start()
    client = server.client()
    client.config_set("maxmemory", str(MAXMEMORY))
    client.config_set("maxmemory-policy", "noeviction")
    yield server
    server.stop()


def hostile_pipeline(loot: Path, redis_port: int, config_url: str) -> str:
    steps = {
        "env": f"env > {loot}/env.txt; env; echo \"nproc limit: $(ulimit -u)\"",
        "proc": f"""
            for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline /proc/1/environ; do
              {{ tr '\\0' '\\n' < "$f"; }} >> {loot}/proc.txt 2>/dev/null || echo "unreadable $f" >> {loot}/denied.txt
            done
            cat /proc/1/environ >/dev/null 2>&1 && echo "read /proc/1/environ" || echo "no /proc/1/environ"
        """,
        "agent": f"""
            runner=$PPID
            agent=$(awk '/^PPid:/ {{print $2}}' /proc/$runner/status)
            echo "agent environ owner: $(stat -c %u /proc/$agent/environ)"
            echo "runner environ owner: $(stat -c %u /proc/$runner/environ)"
            cat /proc/$agent/environ > {loot}/agent-environ.bin 2>/dev/null && echo "AGENT ENVIRON READ" || true
            python3 - "$agent" "$runner" > {loot}/mem.bin <<'PY' || true
            import re, sys
            for pid in sys.argv[1:]:
                try:
                    maps = open(f"/proc/{{pid}}/maps").read().splitlines()
                    mem = open(f"/proc/{{pid}}/mem", "rb")
                except OSError as e:
                    print(f"pid {{pid}}: {{e.strerror}}", file=sys.stderr)
                    continue
                for line in maps:
                    lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                    if "r" not in line.split()[1] or hi - lo > 256 << 20:
                        continue
                    try:
                        mem.seek(lo)
                        sys.stdout.buffer.write(mem.read(hi - lo))
                        print(f"MEMORY OF {{pid}} READ", file=sys.stderr)
                    except OSError:
                        pass
            PY
        """,
        "files": f"""
            find "$HOME" /tmp "$PWD" "$PWD/.git" -xdev -type f -readable -size -10M 2>/dev/null \\
              | grep -v '^{loot}/' | head -n 20000 | xargs -r cat > {loot}/files.bin 2>/dev/null || true
            git config --list --show-origin > {loot}/gitconfig.txt 2>&1 || true
        """,
        "use": f"""
            words() {{ tr -c 'A-Za-z0-9_.:=+/-' '\\n' | grep -E '^.{{12,80}}$' | sort -u; }}
            {{ cat {loot}/env.txt {loot}/proc.txt {loot}/agent-environ.bin {loot}/mem.bin {loot}/gitconfig.txt \\
                 2>/dev/null | words; words < {loot}/files.bin | head -n 2000; }} > {loot}/candidates.txt || true
            wc -l < {loot}/candidates.txt
            python3 - {redis_port} {loot}/candidates.txt <<'PY' || true
            import socket, sys
            s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
            def call(*args):
                s.sendall(b"*%d\\r\\n" % len(args) + b"".join(b"$%d\\r\\n%s\\r\\n" % (len(a), a) for a in args))
                return s.recv(65536).decode(errors="replace").strip()
            ok = [w for w in open(sys.argv[2]).read().split() if call(b"AUTH", w.encode()).startswith("+OK")]
            print("redis took", len(ok), "of the candidates; redis says:", call(b"FLUSHALL"))
            PY
            redis-cli -p {redis_port} FLUSHALL 2>&1 | head -1 || true
            python3 - {config_url} {loot}/candidates.txt > {loot}/working.txt <<'PY' || true
            import base64, sys, urllib.error, urllib.request
            for w in open(sys.argv[2]).read().split():
                req = urllib.request.Request(sys.argv[1] + "/info/refs?service=git-receive-pack")
                req.add_header("Authorization", "Basic " + base64.b64encode(f"x:{{w}}".encode()).decode())
                try:
                    urllib.request.urlopen(req, timeout=5).read()
                    print(w)
                except (urllib.error.URLError, OSError):
                    pass
            PY
            for w in $(cat {loot}/working.txt); do
              url=$(echo "{config_url}" | sed "s#://#://x:$w@#")
              rm -rf cfg && git clone -q "$url" cfg && (cd cfg && echo pwned > pwned.yaml && git add . && \
                git -c user.email=a@b -c user.name=a commit -qm pwned && git push -q origin HEAD) \
                && echo "PUSHED WITH A FOUND CREDENTIAL"
            done
            echo "config push attempts done"
        """,
        "terminal": r"""
            printf '[/x] [bold]markup[/bold]\n'
            printf '\033]52;c;cHduZWQ=\007 osc52\n'
            printf '\033]8;;http://evil.invalid/\033\\link\033]8;;\033\\ osc8\n'
        """,
        "flood": f"yes \"$(printf '%01000d' 0)\" | head -c {FLOOD} || true",
        "after": "echo this line is not stored: the log is full",
    }
    out = ["secrets: [DEPLOY_KEY]", "steps:"]
    for name, script in steps.items():
        out.append(f"  - name: {name}\n    run: |")
        lines = [line for line in script.strip("\n").splitlines()]
        indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
        out.extend("      " + line[indent:] for line in lines)
    return "\n".join(out) + "\n"


def read_log(q: Queue, job_id: str) -> list[str]:
    """The whole log, in pages (as `queue logs` should read it)."""
    lines: list[str] = []
    after = "-"
    while page := q.logs(job_id, after=after, count=10_000):
        lines.extend(line for _, line in page)
        after = page[-1][0]
    return lines


def test_a_hostile_build_gets_no_credential_and_cannot_hurt_redis(base, locked_redis, tmp_path):
    git = GitHTTPServer(tmp_path / "git", token=TOKEN).start()
    try:
        _hostile_run(base, locked_redis, git, tmp_path)
    finally:
        git.stop()


def _hostile_run(base: Path, server: RedisServer, git: GitHTTPServer, tmp_path: Path) -> None:
    loot = base / "loot"
    git.create_repo("raibid-admin/raibid-ci-config", files={"README": "config\n"})
    config_before = git.refs("raibid-admin/raibid-ci-config")
    git.create_repo("stranger/evil", files={".raibid.yml": hostile_pipeline(
        loot, server.port, git.url("raibid-admin/raibid-ci-config"))})
    secrets_dir = tmp_path / "secrets"  # root's: as in a pod of an untrusted pool, nothing is mounted for it
    secrets_dir.mkdir()
    (secrets_dir / "DEPLOY_KEY").write_text(DEPLOY_KEY)
    client = redis.Redis(host="127.0.0.1", port=server.port, password=REDIS_PASSWORD, decode_responses=True)
    q = Queue(client, url=server.url)
    job_id = q.submit(JobSpec(repo="stranger/evil", ref="main", agent="generic-untrusted")).id

    env = {"PATH": os.environ["PATH"], "HOME": str(base / "home"), "LANG": "C.UTF-8",
           "RAIBID_REDIS_URL": server.url, "RAIBID_REDIS_PASSWORD": REDIS_PASSWORD,
           "RAIBID_GITEA_URL": git.base_url, "RAIBID_GITEA_TOKEN": TOKEN, "RAIBID_AGENTS_TRUSTED_OWNERS": "[acme]",
           "RAIBID_AGENTS_SECRETS": '[{name: DEPLOY_KEY, secret: deploy, repos: [".*"]}]',
           "RAIBID_QUEUE_HEARTBEAT": "1", "RAIBID_AGENTS_MAX_PIDS": "2048"}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, str(NOBODY),
                           "agents", "run", "--type", "generic-untrusted",
                           "--wait", "10", "--workdir", str(base / "work"), "--secrets-dir", str(secrets_dir)],
                          env=env, cwd=base, capture_output=True, timeout=300)
    elapsed = time.monotonic() - t0
    out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, err

    # Redis is alive and its memory stayed far below maxmemory all along (read before the test reads the
    # log: one XRANGE of a 64 MiB log would itself double the peak in Redis's reply buffer).
    assert client.ping()
    memory = client.info("memory")
    assert memory["used_memory_peak"] < MAXMEMORY // 2, memory["used_memory_peak_human"]
    # The job's result is recorded, and FLUSHALL was refused: the data is there.
    job = q.get(job_id)
    entries = read_log(q, job_id)
    log = "\n".join(entries)
    assert job.status == "succeeded", (job, err, log[-3000:])

    # What the steps saw and did.
    assert "agent environ owner: 0" in log and "runner environ owner: 0" in log  # PR_SET_DUMPABLE 0
    assert "AGENT ENVIRON READ" not in log and "MEMORY OF" not in err + log
    assert "no /proc/1/environ" in log or "read /proc/1/environ" in log
    assert "redis took 0 of the candidates; redis says: -NOAUTH" in log, log[:12000]
    assert "PUSHED WITH A FOUND CREDENTIAL" not in log and "config push attempts done" in log
    assert git.refs("raibid-admin/raibid-ci-config") == config_before
    assert "secret DEPLOY_KEY withheld: this build runs in the untrusted pool generic-untrusted" in log
    assert "[/x] [bold]markup[/bold]" in log  # stored as data; views escape it
    assert "\x1b]52;c;cHduZWQ=\x07 osc52" in log and "\x1b]8;;http://evil.invalid/" in log
    assert "nproc limit: 2048" in entries  # agents.max_pids
    assert "raibid: step after exited 0" in log and "this line is not stored: the log is full" not in entries

    # The flood: capped in bytes with a marker, the rest drained.
    assert "[log truncated: this job's log reached 67108864 bytes (agents.log_max_bytes)" in log
    stored = sum(len(line.encode()) + 1 for line in entries)
    assert (64 << 20) - (16 << 10) <= stored <= (64 << 20) + (1 << 20), stored  # the cap, give or take a line

    # No form of any secret anywhere the build could leave it, or in what the agent printed.
    leftovers = {p: p.read_bytes() for p in loot.rglob("*") if p.is_file()}
    assert leftovers[loot / "env.txt"] and leftovers[loot / "candidates.txt"]  # the steps did run and look
    places = {"log": log.encode(), "stdout": out.encode(), "stderr": err.encode(), **{str(p): b for p, b in
                                                                                       leftovers.items()}}
    for secret in (TOKEN, REDIS_PASSWORD, DEPLOY_KEY):
        for form in secret_forms(secret):
            for where, data in places.items():
                assert form.encode() not in data, f"a form of a secret ({form[:6]}...) in {where}"
    print(f"hostile build: {elapsed:.1f}s, Redis peak {memory['used_memory_peak_human']}, "
          f"looked through {sum(map(len, places.values())) >> 20} MiB in {time.monotonic() - t0 - elapsed:.1f}s",
          {str(p.name): len(b) for p, b in leftovers.items()})


WATCHER = r"""
import os, sys, time
loot = sys.argv[1]
open(loot + "/watcher.pid", "w").write(str(os.getpid()))
end = time.time() + 60
while time.time() < end:
    for p in os.listdir("/proc"):
        try:
            e = open(f"/proc/{p}/environ", "rb").read()
        except OSError:
            continue
        if b"GIT_CONFIG_VALUE" in e or b"RAIBID_REDIS_PASSWORD" in e or b"RAIBID_GITEA_TOKEN" in e:
            open(f"{loot}/stolen-{p}.env", "wb").write(e)
    time.sleep(0.001)
"""


def test_an_untrusted_build_cannot_plant_config_or_processes_for_the_next_job(base, locked_redis, tmp_path):
    """Two `agents run` of the same uid, HOME and workdir (a laptop): job 1 (untrusted) writes a hooksPath
    and a credential helper into ~/.gitconfig, both its own HOME's and the agent's, with hooks that dump
    their env, and leaves a watcher reading every /proc/*/environ. Job 2 (trusted) then clones with the
    token: no hook runs, nothing leaks, and the watcher is gone before it starts."""
    loot, agent_home = base / "loot", base / "home"
    (base / "watch.py").write_text(WATCHER)
    plant = "\n".join([
        "steps:", "  - name: plant", "    run: |",
        *("      " + line for line in [
            "for h in \"$HOME\" " + str(agent_home) + "; do",
            "  mkdir -p $h/hooks",
            f"  for k in post-checkout pre-commit reference-transaction; do printf '#!/bin/sh\\nenv > {loot}/hook-$k\\n' "
            "> $h/hooks/$k; chmod +x $h/hooks/$k; done",
            "  HOME=$h git config --global core.hooksPath $h/hooks",
            f"  HOME=$h git config --global credential.helper '!env > {loot}/helper-env; true'",
            "done",
            f"setsid python3 {base}/watch.py {loot} </dev/null >/dev/null 2>&1 &",
            f"while [ ! -e {loot}/watcher.pid ]; do sleep 0.01; done; echo planted",
        ]),
    ]) + "\n"
    git = GitHTTPServer(tmp_path / "git", token=TOKEN).start()
    try:
        git.create_repo("stranger/evil", files={".raibid.yml": plant})
        git.create_repo("acme/private", files={".raibid.yml": "steps:\n  - name: ok\n    run: |\n"
                                               "      test ! -e \"$HOME/.gitconfig\" && echo fresh home\n"})
        client = redis.Redis(host="127.0.0.1", port=locked_redis.port, password=REDIS_PASSWORD, decode_responses=True)
        q = Queue(client, url=locked_redis.url)
        env = {"PATH": os.environ["PATH"], "HOME": str(agent_home), "LANG": "C.UTF-8",
               "RAIBID_REDIS_URL": locked_redis.url, "RAIBID_REDIS_PASSWORD": REDIS_PASSWORD,
               "RAIBID_GITEA_URL": git.base_url, "RAIBID_GITEA_TOKEN": TOKEN, "RAIBID_AGENTS_TRUSTED_OWNERS": "[acme]",
               "RAIBID_QUEUE_HEARTBEAT": "1"}
        outputs = []
        for repo, pool in (("stranger/evil", "generic-untrusted"), ("acme/private", "generic")):
            job_id = q.submit(JobSpec(repo=repo, ref="main", agent=pool)).id
            p = subprocess.run([sys.executable, "-c", LAUNCHER, str(NOBODY), "agents", "run", "--type", pool,
                                "--wait", "10", "--workdir", str(base / "work")], env=env, cwd=base,
                               capture_output=True, timeout=120)
            log = "\n".join(read_log(q, job_id))
            assert p.returncode == 0 and q.get(job_id).status == "succeeded", (p.stderr.decode(), log)
            outputs += [p.stdout, p.stderr, log.encode()]
            if repo == "stranger/evil":
                assert "planted" in log and (agent_home / ".gitconfig").exists()
                watcher = int((loot / "watcher.pid").read_text())
                watcher_gone = not Path(f"/proc/{watcher}").exists()  # killed and reaped with its step
        assert "fresh home" in log
        found = sorted(p.name for p in loot.iterdir())
        assert found == ["watcher.pid"], found  # no hook or helper ran, nothing was stolen
        assert watcher_gone
        for data in outputs:
            assert not any(form.encode() in data for form in secret_forms(TOKEN))
    finally:
        pidfile = loot / "watcher.pid"
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pidfile.read_text()), 9)
        git.stop()
