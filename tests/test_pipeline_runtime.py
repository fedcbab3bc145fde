# ruff: noqa: F811 - the fixtures of tests/test_agents_runtime.py are imported by name
"""The agent runs the job's pipeline: it parses the checked-out `.raibid.yml` and picks ``job.pipeline``."""

from __future__ import annotations

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

FILE = """\
pipelines:
  - name: test
    steps: [{name: t, run: echo ran-test}]
  - name: docs
    steps: [{name: d, run: echo ran-docs}]
"""


def test_the_agent_runs_the_pipeline_the_job_names(q, git, redis_url, tmp_path, argv_log):
    git.create_repo("acme/app", files={".raibid.yml": FILE})
    job_id = submit(q, "acme/app", pipeline="docs", context="raibid/docs")
    code, _, err = finish(start_agent(agent_env(redis_url, git, tmp_path), tmp_path / "w"))
    assert code == 0, err
    assert q.get(job_id).status == "succeeded"
    text = log_text(q, job_id)
    assert "ran-docs" in text and "ran-test" not in text


def test_a_pipeline_the_commit_does_not_have_fails_the_job_by_name(q, git, redis_url, tmp_path, argv_log):
    git.create_repo("acme/app", files={".raibid.yml": FILE})
    job_id = submit(q, "acme/app", pipeline="deploy")
    code, _, err = finish(start_agent(agent_env(redis_url, git, tmp_path), tmp_path / "w"))
    assert code == 0, err
    job = q.get(job_id)
    assert job.status == "failed"
    assert "no pipeline named 'deploy' in this commit's file (it has: test, docs)" in job.error


def test_a_job_naming_no_pipeline_of_a_one_pipeline_file_runs_as_before(q, git, redis_url, tmp_path, argv_log):
    git.create_repo("acme/app", files={".raibid.yml": "steps: [{run: echo one}]\n"})
    job_id = submit(q, "acme/app")
    code, _, err = finish(start_agent(agent_env(redis_url, git, tmp_path), tmp_path / "w"))
    assert code == 0, err
    assert q.get(job_id).status == "succeeded" and "one" in log_text(q, job_id)
