"""`raibid.agents.plan`: which pipelines a trigger gets, on which agent, under which context."""

from __future__ import annotations

import pytest

from raibid.agents.pipeline import PipelineError
from raibid.agents.plan import PlannedJob, TriggerInfo, plan

SHA = "a" * 40


def push(branch: str = "main", changed: tuple[str, ...] | None = None, **kw) -> TriggerInfo:
    return TriggerInfo(event="push", repo="acme/app", commit=SHA, branch=branch, changed=changed, **kw)


def tag(name: str = "v1.0") -> TriggerInfo:
    return TriggerInfo(event="tag", repo="acme/app", commit=SHA, tag=name)


def pr(base: str = "main", head: str = "feature", changed: tuple[str, ...] | None = None) -> TriggerInfo:
    return TriggerInfo(event="pull_request", repo="acme/app", commit=SHA, branch=head, pr="7", base_ref=base,
                       head_ref=head, changed=changed)


def manual(branch: str = "main") -> TriggerInfo:
    return TriggerInfo(event="manual", repo="acme/app", commit=SHA, branch=branch)


def one(when: str) -> str:
    return f"when: {when}\nsteps:\n  - run: make\n"


# (when, trigger, builds)
CASES = [
    # no `when`: every event, as Woodpecker
    (None, push(), True),
    (None, tag(), True),
    (None, pr(), True),
    (None, manual(), True),
    # event, as a string and a list
    ("{event: push}", push(), True),
    ("{event: push}", tag(), False),
    ("{event: push}", pr(), False),
    ("{event: [push, tag]}", tag(), True),
    ("{event: [push, pull_request]}", pr(), True),
    ("{event: manual}", manual(), True),
    ("{event: manual}", push(), False),
    # branch: a glob, a list, include/exclude; doublestar's * stops at /, ** crosses it
    ("{branch: main}", push("main"), True),
    ("{branch: main}", push("mainline"), False),
    ("{branch: [main, 'release/*']}", push("release/1.2"), True),
    ("{branch: 'release/*'}", push("release/1/hotfix"), False),
    ("{branch: 'release/**'}", push("release/1/hotfix"), True),
    ("{branch: {include: ['*'], exclude: [wip]}}", push("wip"), False),
    ("{branch: {include: ['*'], exclude: [wip]}}", push("dev"), True),
    ("{branch: {exclude: ['dependabot/**']}}", push("dependabot/npm/x"), False),
    ("{branch: {exclude: ['dependabot/**']}}", push("main"), True),
    ("{branch: 'feat-{a,b}'}", push("feat-b"), True),
    ("{branch: 'v[0-9]'}", push("v7"), True),
    ("{branch: 'v[!0-9]'}", push("v7"), False),
    # branch is not checked for a tag (Woodpecker), and a PR is matched on its base branch
    ("{branch: main}", tag(), True),
    ("{branch: main}", pr(base="main", head="feature"), True),
    ("{branch: main}", pr(base="dev", head="main"), False),
    # AND inside one item, OR between items
    ("{event: push, branch: main}", push("dev"), False),
    ("[{event: push, branch: main}, {event: tag}]", push("dev"), False),
    ("[{event: push, branch: main}, {event: tag}]", tag(), True),
    ("[{event: push, branch: main}, {event: tag}]", push("main"), True),
    # path: any changed file included, unless every changed file is excluded
    ("{path: 'src/**'}", push(changed=("src/a/b.rs",)), True),
    ("{path: 'src/**'}", push(changed=("docs/x.md",)), False),
    ("{path: '*.md'}", push(changed=("docs/x.md",)), False),
    ("{path: '**/*.md'}", push(changed=("docs/x.md", "README.md")), True),
    ("{path: {exclude: ['docs/**']}}", push(changed=("docs/a.md", "docs/b/c.md")), False),
    ("{path: {exclude: ['docs/**']}}", push(changed=("docs/a.md", "src/main.rs")), True),
    ("{path: {include: ['src/**'], exclude: ['src/gen/**']}}", push(changed=("src/gen/x.rs",)), False),
    # unknown changed files (None) match; an empty diff matches unless on_empty: false (Woodpecker's Path)
    ("{path: 'src/**'}", push(changed=None), True),
    ("{path: 'src/**'}", push(changed=()), True),
    ("{path: {include: ['src/**'], on_empty: false}}", push(changed=()), False),
    ("{path: {include: ['src/**'], on_empty: false}}", push(changed=None), True),
    # path is checked for push and pull_request only
    ("{path: 'src/**'}", tag(), True),
    ("{path: 'src/**'}", manual(), True),
    ("{path: 'src/**'}", pr(changed=("docs/x",)), False),
    ("{path: 'src/**'}", pr(changed=("src/x",)), True),
]


@pytest.mark.parametrize(("when", "trigger", "builds"), CASES)
def test_when_says_yes_or_no(when, trigger, builds):
    text = one(when) if when is not None else "steps:\n  - run: make\n"
    jobs = plan(text, ".raibid.yml", trigger)
    assert [j.pipeline for j in jobs] == (["app"] if builds else [])


def test_the_one_pipeline_format_is_one_job_named_after_the_repo_on_the_default_agent():
    jobs = plan("env: {A: '1'}\nsecrets: [TOK]\nsteps:\n  - name: t\n    run: make\n", ".raibid.yml", push(),
                default_agent="python")
    assert jobs == [PlannedJob("app", "python", "raibid/app", 1, ("t",), ("TOK",), {"A": "1"})]


def test_several_pipelines_give_several_jobs_with_their_own_agent_and_context():
    text = """\
pipelines:
  - name: test
    agent: rust
    steps: [{run: cargo test}]
  - name: docs
    when: {path: 'docs/**'}
    steps: [{run: make docs}]
  - name: release
    when: {event: tag}
    steps: [{run: make release}]
"""
    jobs = plan(text, ".raibid.yml", push(changed=("docs/index.md",)))
    assert [(j.pipeline, j.agent, j.context) for j in jobs] == [
        ("test", "rust", "raibid/test"), ("docs", "generic", "raibid/docs")]
    jobs = plan(text, ".raibid.yml", push(changed=("src/lib.rs",)))
    assert [j.pipeline for j in jobs] == ["test"]
    assert [j.pipeline for j in plan(text, ".raibid.yml", tag())] == ["test", "docs", "release"]


def test_top_level_agent_and_when_apply_to_the_one_pipeline():
    text = "agent: rust\nwhen: {branch: main}\nsteps:\n  - run: cargo test\n"
    assert [(j.agent, j.context) for j in plan(text, "f", push("main"))] == [("rust", "raibid/app")]
    assert plan(text, "f", push("dev")) == []


def test_an_agent_type_the_config_does_not_know_is_an_error_naming_the_line():
    text = "pipelines:\n  - name: a\n    steps: [{run: x}]\n  - name: b\n    agent: cobol\n    steps: [{run: x}]\n"
    with pytest.raises(PipelineError, match=r"^\.raibid\.yml:4: pipeline 'b': agent type 'cobol' is not configured"):
        plan(text, ".raibid.yml", push(), agent_types={"generic", "rust"})
    assert [j.agent for j in plan(text, ".raibid.yml", push(), agent_types={"generic", "cobol"})] == ["generic", "cobol"]


def test_a_malformed_file_raises_naming_file_and_line_even_when_nothing_would_match():
    text = "when: {event: push}\nsteps:\n  - run: make\n    tiemout: 3\n"
    with pytest.raises(PipelineError, match=r"^\.raibid\.yml:4: step 1: unknown key 'tiemout'"):
        plan(text, ".raibid.yml", tag())
