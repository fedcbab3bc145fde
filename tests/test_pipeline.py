"""`raibid.agents.pipeline`: the `.raibid.yml` format, its limits, its file:line errors and its globs."""

from __future__ import annotations

import pytest

from raibid.agents.pipeline import (
    MAX_BYTES,
    MAX_PIPELINES,
    PipelineError,
    glob_match,
    parse_file,
    parse_pipeline,
)

TWO = """\
pipelines:
  - name: test
    agent: rust
    env: {A: '1'}
    secrets: [TOK]
    when:
      - event: [push, pull_request]
        branch: {include: [main], exclude: ['wip/**']}
        path: ['src/**']
    steps:
      - name: unit
        run: cargo test
        env: {B: '2'}
  - name: lint
    steps: [{run: cargo clippy}]
"""


def test_named_pipelines_parse_with_their_fields():
    f = parse_file(TWO, ".raibid.yml")
    assert f.named and f.names() == ["test", "lint"]
    test = f.select("test")
    assert (test.agent, test.secrets, test.env, test.line) == ("rust", ["TOK"], {"A": "1"}, 2)
    assert test.steps[0].env == {"A": "1", "B": "2"}
    (c,) = test.when
    assert c.events == ("push", "pull_request") and c.line == 7
    assert c.branch is not None and c.branch.include == ("main",) and c.branch.exclude == ("wip/**",)
    assert c.path is not None and c.path.include == ("src/**",)
    assert f.select("lint").agent is None and f.select("lint").when == []


def test_the_one_pipeline_format_keeps_working_and_is_named_by_the_caller():
    f = parse_file("steps:\n  - run: make\n", default_name="app")
    assert not f.named and f.names() == ["app"]
    assert f.select(None).steps[0].run == "make"
    assert f.select("app").steps[0].run == "make"
    # a job queued when the repo had another name still runs the file's one pipeline
    assert f.select("old-name").steps[0].run == "make"
    assert parse_pipeline("steps:\n  - run: make\n").steps[0].name == "step-1"


def test_selecting_a_pipeline_the_commit_does_not_have_is_a_clear_error():
    f = parse_file(TWO, ".raibid.yml")
    with pytest.raises(PipelineError, match=r"no pipeline named 'deploy' in this commit's file \(it has: test, lint\)"):
        f.select("deploy")
    with pytest.raises(PipelineError, match=r"the job names no pipeline and the file has 2 \(test, lint\)"):
        f.select(None)


@pytest.mark.parametrize(("text", "message"), [
    ("pipelines: []\n", ".raibid.yml:1: `pipelines` must be a non-empty list"),
    ("steps: [{run: a}]\npipelines:\n  - name: a\n    steps: [{run: b}]\n",
     ".raibid.yml:1: 'steps' cannot stand beside `pipelines:`"),
    ("pipelines:\n  - steps: [{run: a}]\n", ".raibid.yml:2: pipeline 1: `name` is required"),
    ("pipelines:\n  - name: a\n    steps: [{run: a}]\n  - name: a\n    steps: [{run: b}]\n",
     ".raibid.yml:4: pipeline 2: duplicate pipeline name 'a'"),
    ("pipelines:\n  - name: '../x'\n    steps: [{run: a}]\n", ".raibid.yml:2: pipeline 1: name '../x' is not a safe name"),
    ("pipelines:\n  - name: a\n    image: x\n    steps: [{run: a}]\n", ".raibid.yml:3: pipeline 1: unknown key 'image'"),
    ("pipelines:\n  - name: a\n    when: {event: push}\n", ".raibid.yml:2: pipeline 'a': no `steps:` list"),
    ("agent: Rust\nsteps: [{run: a}]\n", ".raibid.yml:1: `agent`: 'Rust' is not an agent type"),
    ("agent: rust-untrusted\nsteps: [{run: a}]\n", ".raibid.yml:1: `agent`: 'rust-untrusted' is not an agent type"),
    ("when: {event: cron}\nsteps: [{run: a}]\n", ".raibid.yml:1: `when`: unknown event 'cron'"),
    ("when:\n  - event: push\n  - evaluate: 'x'\nsteps: [{run: a}]\n",
     ".raibid.yml:3: `when`[2]: unsupported condition 'evaluate'"),
    ("when: []\nsteps: [{run: a}]\n", ".raibid.yml:1: `when` is an empty list"),
    ("when: push\nsteps: [{run: a}]\n", ".raibid.yml:1: `when` must be a mapping"),
    ("when: {branch: {only: [main]}}\nsteps: [{run: a}]\n", ".raibid.yml:1: `when`: `branch`: unknown key 'only'"),
    ("when: {branch: {include: []}}\nsteps: [{run: a}]\n", ".raibid.yml:1: `when`: `branch`.include is an empty list"),
    ("when: {branch: 'rel[ease'}\nsteps: [{run: a}]\n",
     ".raibid.yml:1: `when`: `branch`: invalid glob 'rel[ease': a '[' has no closing ']'"),
    ("when:\n  path:\n    include: ['{a,b']\nsteps: [{run: a}]\n",
     ".raibid.yml:3: `when`: `path`.include: invalid glob '{a,b': a '{' has no closing '}'"),
    ("when: {path: {include: [a], on_empty: maybe}}\nsteps: [{run: a}]\n",
     ".raibid.yml:1: `when`: `path`.on_empty must be true or false"),
    ("when: {branch: {on_empty: false}}\nsteps: [{run: a}]\n", ".raibid.yml:1: `when`: `branch`: unknown key 'on_empty'"),
    ("pipelines:\n  - name: a\n    secrets: [1x]\n    steps: [{run: a}]\n",
     ".raibid.yml:3: pipeline 'a': `secrets`: '1x' is not a secret name"),
])
def test_malformed_files_name_the_line(text, message):
    with pytest.raises(PipelineError) as e:
        parse_file(text, ".raibid.yml")
    assert str(e.value.message).startswith(message), e.value.message


def test_the_file_size_and_the_number_of_pipelines_and_steps_are_capped():
    with pytest.raises(PipelineError, match=r"^\.raibid\.yml: the file is larger than 256 KiB"):
        parse_file("#" * (MAX_BYTES + 1))
    many = "pipelines:\n" + "".join(f"  - name: p{i}\n    steps: [{{run: a}}]\n" for i in range(MAX_PIPELINES + 1))
    with pytest.raises(PipelineError, match=r"^\.raibid\.yml:2: `pipelines` has 33 entries; at most 32"):
        parse_file(many)
    steps = "steps:\n" + "".join(f"  - run: s{i}\n" for i in range(101))
    with pytest.raises(PipelineError, match=r"^\.raibid\.yml:2: `steps` has 101 entries; at most 100"):
        parse_file(steps)


@pytest.mark.parametrize(("pattern", "value", "ok"), [
    ("main", "main", True),
    ("main", "main2", False),
    ("*", "a/b", False),
    ("**", "a/b", True),
    ("src/**", "src", True),
    ("src/**", "src/a/b.rs", True),
    ("src/**", "srcx/a", False),
    ("**/*.md", "README.md", True),
    ("**/*.md", "docs/a/b.md", True),
    ("docs/**/index.md", "docs/index.md", True),
    ("a?c", "abc", True),
    ("a?c", "a/c", False),
    ("[a-c]x", "bx", True),
    ("[!a-c]x", "dx", True),
    ("[!a-c]x", "/x", False),
    ("{foo,bar}/*", "bar/x", True),
    ("\\*", "*", True),
    ("\\*", "x", False),
    ("a.b", "axb", False),
])
def test_globs_are_doublestar(pattern, value, ok):
    assert glob_match(pattern, value) is ok
