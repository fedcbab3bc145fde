# ruff: noqa: F811 - the fixtures of tests/test_agents_runtime.py are imported by name
"""`image:` steps in the real agent runtime: a real redis-server, real git over HTTP, the real step runner,
and a fake `buildctl` first on PATH (there is no BuildKit nor registry on this machine) that records its argv,
its environment and the docker config.json it was given, and writes BuildKit's metadata file."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import pytest

from raibid.queue import JobSpec
from tests.test_agents_runtime import (  # noqa: F401 - fixtures
    agent_env,
    argv_log,
    finish,
    git,
    log_text,
    q,
    start_agent,
    submit,
)

PUSH_TOKEN = "push-token-9d8c7b6a5f4e"
DIGEST = "sha256:" + "ab" * 32
SECRETS_ENV = '[{name: RAIBID_REGISTRY_PUSH, secret: raibid-gitea-builder, key: token, repos: ["acme/.*"]}]'
FAKE = r'''#!{python}
import json, os, sys
argv = sys.argv[1:]
cfg = os.path.join(os.environ.get("DOCKER_CONFIG", "/nonexistent"), "config.json")
record = {{"argv": argv, "env": dict(os.environ),
           "config": open(cfg).read() if os.path.exists(cfg) else None}}
with open({record!r}, "a") as f:
    f.write(json.dumps(record) + "\n")
print("#1 [internal] load build definition from Dockerfile")
print("#8 exporting to image DONE 0.1s")
meta = argv[argv.index("--metadata-file") + 1]
with open(meta, "w") as f:
    json.dump({{"containerimage.digest": {digest!r}, "image.name": "x"}}, f)
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
'''


@pytest.fixture
def buildctl(tmp_path: Path, argv_log) -> Path:
    """The fake's record file (one JSON line per run)."""
    record = tmp_path / "buildctl.jsonl"
    path = tmp_path / "bin" / "buildctl"
    path.write_text(FAKE.format(python=sys.executable, record=str(record), digest=DIGEST))
    path.chmod(0o755)
    return record


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    d = tmp_path / "secrets"
    d.mkdir()
    (d / "RAIBID_REGISTRY_PUSH").write_text(PUSH_TOKEN)
    return d


def runs(record: Path) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


PIPELINE = """\
steps:
  - name: check
    run: test ! -e "$HOME/.docker" && echo "no docker config before"
  - name: publish
    image:
      name: acme/app
      tags: ['${RAIBID_COMMIT}', 'br-${RAIBID_REF}']
      platforms: [linux/arm64, linux/amd64]
      cache: true
      dockerfile: docker/Dockerfile
  - name: after
    run: test ! -e "$HOME/.docker" && echo "config removed after"; env | grep -c PUSH || true
"""


def test_a_trusted_image_step_pushes_with_the_credential_for_that_step_only(q, git, redis_url, tmp_path, buildctl,
                                                                             secrets_dir, run):
    git.create_repo("acme/app")
    sha = git.commit("acme/app", "feat/x", {".raibid.yml": PIPELINE, "docker/Dockerfile": "FROM scratch\n"})
    job_id = submit(q, "acme/app", ref="refs/heads/feat/x")
    env = agent_env(redis_url, git, tmp_path, RAIBID_AGENTS_SECRETS=SECRETS_ENV)
    code, out, err = finish(start_agent(env, tmp_path / "w", "--secrets-dir", str(secrets_dir)))
    assert code == 0, err
    log = log_text(q, job_id)
    job = q.get(job_id)
    assert job.status == "succeeded", log
    registry = git.base_url.split("//", 1)[1].rstrip("/")
    base = f"{registry}/acme/app"
    (call,) = runs(buildctl)
    assert call["argv"] == [
        "--addr", "tcp://127.0.0.1:1234", "build", "--frontend", "dockerfile.v0",
        "--local", "context=.", "--local", "dockerfile=docker", "--opt", "filename=Dockerfile",
        "--opt", "platform=linux/arm64,linux/amd64",
        "--output", f'type=image,"name={base}:{sha},{base}:br-feat-x",push=true,registry.insecure=true',
        "--metadata-file", str(tmp_path / "w" / "tmp" / "raibid-image-2.json"), "--progress", "plain",
        "--export-cache", f"type=registry,ref={base}:buildcache,mode=max,registry.insecure=true",
        "--import-cache", f"type=registry,ref={base}:buildcache,registry.insecure=true"]
    # The credential: a docker config.json in the step's private HOME, for this step only, never in env.
    auth = base64.b64encode(f"raibid-ci:{PUSH_TOKEN}".encode()).decode()
    assert json.loads(call["config"]) == {"auths": {registry: {"auth": auth}}}
    assert call["env"]["DOCKER_CONFIG"] == str(tmp_path / "w" / "home" / ".docker")
    assert not any(PUSH_TOKEN in v or auth in v for v in call["env"].values())
    assert "no docker config before" in log and "config removed after" in log
    # Recorded on the job, and shown by queue show.
    refs = [f"{base}:{sha}@{DIGEST}", f"{base}:br-feat-x@{DIGEST}"]
    assert job.image == " ".join(refs)
    assert f"raibid: image {refs[0]}" in log and "exporting to image DONE" in log
    assert "raibid: step publish (2/3): image acme/app:${RAIBID_COMMIT},br-${RAIBID_REF} (linux/arm64," in log
    for text in (log, out, err):
        assert PUSH_TOKEN not in text and auth not in text
    assert not (tmp_path / "w" / "home").exists()  # the step dirs are gone after the job

    shown = run("queue", "show", job_id, "--json").json()
    assert shown["image"] == " ".join(refs)


def test_an_untrusted_push_fails_the_step_and_never_gets_the_credential(q, git, redis_url, tmp_path, buildctl,
                                                                        secrets_dir):
    git.create_repo("stranger/app", files={".raibid.yml": "steps:\n  - image: {name: stranger/app}\n",
                                           "Dockerfile": "FROM scratch\n"})
    job_id = q.submit(JobSpec(repo="stranger/app", ref="main", agent="generic-untrusted")).id
    env = agent_env(redis_url, git, tmp_path, RAIBID_AGENTS_SECRETS=SECRETS_ENV.replace("acme/.*", ".*"))
    code, _, err = finish(start_agent(env, tmp_path / "w", "--type", "generic-untrusted",
                                      "--secrets-dir", str(secrets_dir)))
    assert code == 0, err
    job = q.get(job_id)
    assert job.status == "failed" and job.image is None
    assert ("step step-1: push: true, but this build runs in the untrusted pool generic-untrusted (stranger/app is "
            "not in agents.trusted); an untrusted build may only build, with push: false") in job.error
    assert runs(buildctl) == []  # nothing was built


def test_an_untrusted_build_builds_with_push_false_and_no_credential(q, git, redis_url, tmp_path, buildctl,
                                                                     secrets_dir):
    git.create_repo("stranger/app", files={".raibid.yml": "steps:\n  - image: {name: stranger/app, push: false, "
                                                          "cache: true, tags: ['pr-${RAIBID_PR}']}\n",
                                           "Dockerfile": "FROM scratch\n"})
    job_id = q.submit(JobSpec(repo="stranger/app", ref="main", agent="generic-untrusted", event="pull_request",
                              pr="7")).id
    env = agent_env(redis_url, git, tmp_path, RAIBID_AGENTS_SECRETS=SECRETS_ENV.replace("acme/.*", ".*"))
    code, _, err = finish(start_agent(env, tmp_path / "w", "--type", "generic-untrusted",
                                      "--secrets-dir", str(secrets_dir)))
    assert code == 0, err
    job = q.get(job_id)
    assert job.status == "succeeded", log_text(q, job_id)
    (run,) = runs(buildctl)
    assert json.loads(run["config"]) == {"auths": {}}
    assert not any(PUSH_TOKEN in v for v in run["env"].values())
    out = run["argv"][run["argv"].index("--output") + 1]
    assert out.endswith(",push=false,registry.insecure=true") and ":pr-7\"" in out
    assert "--export-cache" not in run["argv"] and "--import-cache" in run["argv"]  # reads the cache, never writes
    assert job.image.endswith(f"/stranger/app:pr-7@{DIGEST}")


@pytest.mark.parametrize(("pipeline", "message"), [
    ("steps:\n  - image: {name: other/app}\n", "step step-1: image other/app is not under acme/; a repo publishes "
                                               "only under its own owner"),
    ("steps:\n  - image: {name: acme/app, tags: ['${RAIBID_PR}']}\n", "step step-1: tag '${RAIBID_PR}' expands to ''"),
    ("secrets: [RAIBID_REGISTRY_PUSH]\nsteps:\n  - run: echo $RAIBID_REGISTRY_PUSH\n",
     "asks for secret RAIBID_REGISTRY_PUSH, the registry push credential: it goes to `image:` steps only"),
])
def test_an_image_step_that_may_not_run_fails_naming_why(q, git, redis_url, tmp_path, buildctl, secrets_dir,
                                                         pipeline, message):
    git.create_repo("acme/app", files={".raibid.yml": pipeline, "Dockerfile": "FROM scratch\n"})
    job_id = submit(q, "acme/app")
    env = agent_env(redis_url, git, tmp_path, RAIBID_AGENTS_SECRETS=SECRETS_ENV)
    code, _, err = finish(start_agent(env, tmp_path / "w", "--secrets-dir", str(secrets_dir)))
    assert code == 0, err
    job = q.get(job_id)
    assert job.status == "failed" and message in job.error, job.error
    assert runs(buildctl) == [] and PUSH_TOKEN not in log_text(q, job_id)


def test_a_trusted_push_without_a_credential_fails_before_building(q, git, redis_url, tmp_path, buildctl):
    git.create_repo("acme/app", files={".raibid.yml": "steps:\n  - image: {name: acme/app}\n"})
    job_id = submit(q, "acme/app")
    code, _, err = finish(start_agent(agent_env(redis_url, git, tmp_path), tmp_path / "w",
                                      "--secrets-dir", str(tmp_path / "none")))
    assert code == 0, err
    job = q.get(job_id)
    assert job.status == "failed" and "push: true needs the push credential, the agents.secrets entry " \
                                      "RAIBID_REGISTRY_PUSH" in job.error
    assert runs(buildctl) == []
