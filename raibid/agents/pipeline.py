"""A repository's ``.raibid.yml``: which pipelines it has, when each runs, on which agent, and their steps.

The one-pipeline format (a pipeline named after the repo)::

    agent: rust          # optional: the agent type (default: mirror.trigger.agent / agents.default_type)
    when:                # optional: Woodpecker's conditions (see below)
      - event: push
        branch: main
    env:                 # optional, for every step
      CARGO_TERM_COLOR: never
    secrets: [CRATES_TOKEN]  # optional: job secrets (agents.secrets), trusted builds only
    steps:
      - name: test
        run: cargo test --locked
        timeout: 20m     # optional: seconds or a duration (90s, 10m, 1h30m)
        env:             # optional, for this step
          RUST_LOG: debug
      - name: publish    # an image step (instead of `run`): BuildKit builds and pushes (ImageSpec)
        image: {context: ., dockerfile: Dockerfile, name: owner/repo, tags: ["${RAIBID_COMMIT}"],
                platforms: [linux/arm64], push: true, cache: true}

Several named pipelines, each its own job and commit status context (``raibid/<name>``)::

    pipelines:
      - name: test
        agent: rust
        steps: [{run: cargo test}]
      - name: docs
        when: {path: ["docs/**", "*.md"]}
        steps: [{run: make docs}]

``when`` is a list of conditions (one mapping is a one-item list), OR between items and AND
inside one, as Woodpecker's (``pipeline/frontend/yaml/constraint``): ``event`` (push,
pull_request, tag, manual; a string or a list), ``branch`` and ``path`` (a glob, a list of
globs, or ``{include: [...], exclude: [...]}``; globs are doublestar's: ``*`` stops at ``/``,
``**`` crosses it). Matching is `raibid.agents.plan`'s.

A malformed file is a `PipelineError` whose message names the file and line: at enqueue an
``error`` status and no job, at run time a failed job.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from raibid.errors import RaibidError

FILE_NAME = ".raibid.yml"
MAX_BYTES = 256 << 10  # a bigger file is refused before YAML sees it
MAX_PIPELINES = 32
MAX_STEPS = 100  # per pipeline
MAX_CONDITIONS = 16  # items of one `when`
MAX_PATTERNS = 64  # globs in one branch or path filter
EVENTS = ("push", "pull_request", "tag", "manual")
_STEP_KEYS = {"name", "run", "image", "timeout", "env"}
_IMAGE_KEYS = {"context", "dockerfile", "name", "tags", "platforms", "push", "cache"}
# What a tag template may name; nothing else is expanded, and nothing is a shell.
TAG_VARIABLES = ("RAIBID_COMMIT", "RAIBID_REF", "RAIBID_PR")
PLATFORMS = ("linux/arm64", "linux/amd64", "linux/arm/v7", "linux/riscv64", "linux/ppc64le", "linux/s390x")
MAX_TAGS = 16
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # the OCI distribution spec's tag (fullmatch)
# The OCI distribution spec's repository name: path components of lower-case alphanumerics and separators.
_NAME_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_NAME_RE = re.compile(rf"{_NAME_COMPONENT}(?:/{_NAME_COMPONENT})+")
_TAG_VAR_RE = re.compile(r"\$\{([^}]*)\}")
_BODY_KEYS = {"agent", "when", "env", "secrets", "steps"}
_TOP_KEYS = _BODY_KEYS | {"pipelines"}
_PIPELINE_KEYS = _BODY_KEYS | {"name"}
_WHEN_KEYS = {"event", "branch", "path"}
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
PIPELINE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # fullmatch; it becomes raibid/<name>
_AGENT_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class PipelineError(RaibidError):
    """The ``.raibid.yml`` cannot be used; the message names the line."""


@dataclass
class ImageSpec:
    """An ``image:`` step: what BuildKit builds (paths inside the checkout) and where it goes."""

    name: str  # <owner>/<repo>, under the registry; the agent requires the job's owner
    tags: tuple[str, ...] = ("${RAIBID_COMMIT}",)  # templates (TAG_VARIABLES); expand_tags gives the tags
    context: str = "."
    dockerfile: str = "Dockerfile"
    platforms: tuple[str, ...] = ("linux/arm64",)
    push: bool = True
    cache: bool = False

    def describe(self) -> str:
        return (f"image {self.name}:{','.join(self.tags)} ({','.join(self.platforms)}"
                f"{', push' if self.push else ''}{', cache' if self.cache else ''})")


@dataclass
class Step:
    name: str
    run: str
    timeout: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    image: ImageSpec | None = None  # an image step (its `run` is empty)


def sanitize_ref(ref: str) -> str:
    """A git ref as tag text: refs/heads/ and refs/tags/ dropped, other characters '-', at most 128."""
    for prefix in ("refs/heads/", "refs/tags/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix):]
            break
    text = re.sub(r"[^A-Za-z0-9_.-]", "-", ref).lstrip(".-")
    return text[:128] or "ref"


def expand_tags(templates: Sequence[str], values: dict[str, str]) -> list[str]:
    """Tag templates with ``${RAIBID_COMMIT}``, ``${RAIBID_REF}`` (sanitised) and ``${RAIBID_PR}`` put in;
    ValueError naming a tag that is not OCI tag syntax afterwards (e.g. ``pr-${RAIBID_PR}`` on a push)."""
    subst = {"RAIBID_COMMIT": values.get("RAIBID_COMMIT", ""),
             "RAIBID_REF": sanitize_ref(values["RAIBID_REF"]) if values.get("RAIBID_REF") else "",
             "RAIBID_PR": values.get("RAIBID_PR", "")}
    out: list[str] = []
    for template in templates:
        tag = _TAG_VAR_RE.sub(lambda m: subst.get(m.group(1), m.group(0)), template)
        if not TAG_RE.fullmatch(tag):
            raise ValueError(f"tag {template!r} expands to {tag[:140]!r}, which is not a tag (letters, digits, "
                             "'_', '.', '-', not starting with '.' or '-', at most 128)")
        if tag not in out:
            out.append(tag)
    return out


@dataclass(frozen=True)
class Globs:
    """An include/exclude filter of doublestar globs (Woodpecker's ``List``)."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def match(self, value: str) -> bool:
        """Excluded loses; then included, or no include list at all."""
        if any(glob_match(p, value) for p in self.exclude):
            return False
        return not self.include or any(glob_match(p, value) for p in self.include)


@dataclass(frozen=True)
class PathGlobs(Globs):
    """Woodpecker's ``Path``: matched against the changed files, not one value."""

    on_empty: bool = True  # what an empty change set gives (Woodpecker's on_empty, default true)

    def match_files(self, files: Sequence[str] | None) -> bool:
        """Unknown files (None) match, as an empty set does by default: a build is not skipped on a guess.
        Excluded when every file matches an exclude glob; included when any file matches an include glob."""
        if files is None:
            return True
        if not files:
            return self.on_empty
        if self.exclude and all(any(glob_match(p, f) for p in self.exclude) for f in files):
            return False
        return not self.include or any(glob_match(p, f) for p in self.include for f in files)


@dataclass(frozen=True)
class Condition:
    """One item of ``when``: every key it sets must hold."""

    events: tuple[str, ...] = ()  # empty: every event
    branch: Globs | None = None
    path: PathGlobs | None = None
    line: int = 0


@dataclass
class Pipeline:
    steps: list[Step]
    secrets: list[str] = field(default_factory=list)  # names of agents.secrets entries, in file order
    name: str = ""
    agent: str | None = None  # the agent type the file names; None: the enqueuer's default
    when: list[Condition] = field(default_factory=list)  # empty: always
    env: dict[str, str] = field(default_factory=dict)  # the pipeline's env (already merged into each step's)
    line: int = 1  # where the pipeline starts in the file


@dataclass
class PipelineFile:
    pipelines: list[Pipeline]
    named: bool  # True: the file has a `pipelines:` list; False: the one-pipeline format
    source: str = FILE_NAME

    def names(self) -> list[str]:
        return [p.name for p in self.pipelines]

    def select(self, name: str | None) -> Pipeline:
        """The pipeline a job names; None is allowed only when the file has exactly one."""
        if name is None:
            if len(self.pipelines) == 1:
                return self.pipelines[0]
            raise PipelineError(f"{self.source}: the job names no pipeline and the file has "
                                f"{len(self.pipelines)} ({', '.join(self.names())})")
        for p in self.pipelines:
            if p.name == name:
                return p
        if not self.named and len(self.pipelines) == 1:
            return self.pipelines[0]  # the one-pipeline format: its name is the repo's, whatever it was then
        raise PipelineError(f"{self.source}: no pipeline named {name[:80]!r} in this commit's file "
                            f"(it has: {', '.join(self.names())})")


def command_step(command: str) -> list[Step]:
    """A job's ``command`` as the single step it runs."""
    return [Step("command", command)]


def parse(text: str, source: str = FILE_NAME) -> list[Step]:
    """The steps of a one-pipeline ``.raibid.yml``, or PipelineError naming ``source:line``."""
    return parse_pipeline(text, source).steps


def parse_pipeline(text: str, source: str = FILE_NAME, name: str | None = None) -> Pipeline:
    """One pipeline of a ``.raibid.yml`` (``name``; None: the file's only one), or PipelineError."""
    return parse_file(text, source).select(name)


def parse_file(text: str, source: str = FILE_NAME, *, default_name: str = "default") -> PipelineFile:
    """Every pipeline of a ``.raibid.yml``, validated, or PipelineError naming ``source:line``.

    ``default_name`` names the pipeline of the one-pipeline format (the enqueuer passes the repo's name).
    """
    import yaml

    if len(text.encode("utf-8", errors="replace")) > MAX_BYTES:
        raise PipelineError(f"{source}: the file is larger than {MAX_BYTES >> 10} KiB")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise PipelineError(f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}") from None

    def fail(node: Any, msg: str) -> PipelineError:
        return PipelineError(f"{source}:{node.start_mark.line + 1}: {msg}")

    if root is None:
        raise PipelineError(f"{source}: the file is empty; it needs a `steps:` list")
    top = _mapping(root, "the top level", fail)
    for key in top:
        if key not in _TOP_KEYS:
            raise fail(top[key][0], f"unknown key {key!r} (expected {', '.join(sorted(_TOP_KEYS))})")
    if "pipelines" not in top:
        return PipelineFile([_body(root, top, default_name, "", fail)], named=False, source=source)
    for key in _BODY_KEYS:
        if key in top:
            raise fail(top[key][0], f"{key!r} cannot stand beside `pipelines:`; put it inside each pipeline")
    items = _mappings(top["pipelines"][1], "`pipelines`",
                      "`pipelines` must be a non-empty list of pipelines, each with a `name`", MAX_PIPELINES,
                      _PIPELINE_KEYS, lambda i: f"pipeline {i}", fail)
    out: list[Pipeline] = []
    seen: set[str] = set()
    for i, node, m in items:
        if "name" not in m:
            raise fail(node, f"pipeline {i}: `name` is required")
        name_node = m["name"][1]
        name = _string(name_node, f"pipeline {i}: `name`", fail)
        if not PIPELINE_NAME_RE.fullmatch(name):
            raise fail(name_node, f"pipeline {i}: name {name[:80]!r} is not a safe name (letters, digits, "
                                  "'_', '.', '-', starting with a letter or digit, at most 63)")
        if name in seen:
            raise fail(name_node, f"pipeline {i}: duplicate pipeline name {name!r}")
        seen.add(name)
        out.append(_body(node, m, name, f"pipeline {name!r}: ", fail))
    return PipelineFile(out, named=True, source=source)


def _mappings(seq: Any, label: str, empty: str, most: int, keys: Collection[str], item: Callable[[int], str],
              fail: Any) -> list[tuple[int, Any, dict[str, tuple[Any, Any]]]]:
    """A non-empty list of at most ``most`` mappings whose keys are all in ``keys``, as (1-based index,
    node, mapping): the shape of both `pipelines:` and `steps:`. ``item(i)`` names entry i in messages."""
    import yaml

    if not isinstance(seq, yaml.SequenceNode) or not seq.value:
        raise fail(seq, empty)
    if len(seq.value) > most:
        raise fail(seq, f"{label} has {len(seq.value)} entries; at most {most}")
    out = []
    for i, node in enumerate(seq.value, 1):
        m = _mapping(node, item(i), fail)
        for key in m:
            if key not in keys:
                raise fail(m[key][0], f"{item(i)}: unknown key {key!r} (expected {', '.join(sorted(keys))})")
        out.append((i, node, m))
    return out


def _body(node: Any, m: dict[str, tuple[Any, Any]], name: str, prefix: str, fail: Any) -> Pipeline:
    """agent, when, env, secrets and steps of one pipeline (the top level, or one `pipelines:` item)."""

    agent = _agent(m["agent"][1], f"{prefix}`agent`", fail) if "agent" in m else None
    when = _when(m["when"][1], f"{prefix}`when`", fail) if "when" in m else []
    common = _env(m["env"][1], f"{prefix}`env`", fail) if "env" in m else {}
    secrets = _secrets(m["secrets"][1], f"{prefix}`secrets`", fail) if "secrets" in m else []
    if "steps" not in m:
        raise fail(node, f"{prefix}no `steps:` list")
    items = _mappings(m["steps"][1], f"{prefix}`steps`", f"{prefix}`steps` must be a non-empty list", MAX_STEPS,
                      _STEP_KEYS, lambda i: f"{prefix}step {i}", fail)
    steps: list[Step] = []
    names: set[str] = set()
    for i, snode, s in items:
        if "run" not in s and "image" not in s:
            raise fail(snode, f"{prefix}step {i}: `run` is required (or `image:`, a container image build)")
        if "run" in s and "image" in s:
            raise fail(s["image"][0], f"{prefix}step {i}: a step has `run` or `image`, not both")
        image = _image(s["image"][1], f"{prefix}step {i}: `image`", fail) if "image" in s else None
        run = _string(s["run"][1], f"{prefix}step {i}: `run`", fail) if "run" in s else ""
        step_name = _string(s["name"][1], f"{prefix}step {i}: `name`", fail) if "name" in s else f"step-{i}"
        if step_name in names:
            raise fail(s["name"][1], f"{prefix}step {i}: duplicate step name {step_name!r}")
        names.add(step_name)
        timeout = (_timeout(s["timeout"][1], f"{prefix}step {step_name!r}: `timeout`", fail)
                   if "timeout" in s else None)
        env = {**common, **(_env(s["env"][1], f"{prefix}step {step_name!r}: `env`", fail) if "env" in s else {})}
        steps.append(Step(step_name, run, timeout, env, image))
    return Pipeline(steps, secrets, name=name, agent=agent, when=when, env=common,
                    line=node.start_mark.line + 1)


def _agent(node: Any, what: str, fail: Any) -> str:
    value = _string(node, what, fail)
    if not _AGENT_RE.fullmatch(value) or value == "dead" or value.endswith("-untrusted"):
        raise fail(node, f"{what}: {value[:60]!r} is not an agent type (lower-case letters, digits and '-'; "
                         "the trust level is the config's, not the file's)")
    return value


def _when(node: Any, what: str, fail: Any) -> list[Condition]:
    import yaml

    items = node.value if isinstance(node, yaml.SequenceNode) else [node]
    if not items:
        raise fail(node, f"{what} is an empty list; leave it out to run on every event")
    if len(items) > MAX_CONDITIONS:
        raise fail(node, f"{what} has {len(items)} conditions; at most {MAX_CONDITIONS}")
    out: list[Condition] = []
    for i, item in enumerate(items, 1):
        where = f"{what}[{i}]" if isinstance(node, yaml.SequenceNode) else what
        m = _mapping(item, where, fail)
        for key in m:
            if key not in _WHEN_KEYS:
                raise fail(m[key][0], f"{where}: unsupported condition {key!r} "
                                      f"(raibid supports {', '.join(sorted(_WHEN_KEYS))})")
        events: tuple[str, ...] = ()
        if "event" in m:
            events = tuple(_strings(m["event"][1], f"{where}: `event`", fail))
            for ev, enode in zip(events, _items(m["event"][1]), strict=True):
                if ev not in EVENTS:
                    raise fail(enode, f"{where}: unknown event {ev[:40]!r} (expected {', '.join(EVENTS)})")
        branch = _globs(m["branch"][1], f"{where}: `branch`", fail) if "branch" in m else None
        path = None
        if "path" in m:
            g = _globs(m["path"][1], f"{where}: `path`", fail, path=True)
            path = g if isinstance(g, PathGlobs) else PathGlobs(g.include, g.exclude)
        out.append(Condition(events, branch, path, item.start_mark.line + 1))
    return out


def _globs(node: Any, what: str, fail: Any, *, path: bool = False) -> Globs:
    """A glob, a list of globs, or {include, exclude} (and, for `path`, on_empty)."""
    import yaml

    on_empty = True
    if isinstance(node, yaml.MappingNode):
        m = _mapping(node, what, fail)
        allowed = {"include", "exclude"} | ({"on_empty"} if path else set())
        for key in m:
            if key not in allowed:
                raise fail(m[key][0], f"{what}: unknown key {key!r} (expected {', '.join(sorted(allowed))})")
        if not ({"include", "exclude"} & set(m)):
            raise fail(node, f"{what} needs `include` or `exclude`")
        include = _patterns(m["include"][1], f"{what}.include", fail) if "include" in m else ()
        exclude = _patterns(m["exclude"][1], f"{what}.exclude", fail) if "exclude" in m else ()
        if "on_empty" in m:
            v = m["on_empty"][1]
            if not isinstance(v, yaml.ScalarNode) or not v.tag.endswith(":bool"):
                raise fail(v, f"{what}.on_empty must be true or false")
            on_empty = v.value.lower() in ("true", "yes", "on")
    else:
        include, exclude = _patterns(node, what, fail), ()
    return PathGlobs(include, exclude, on_empty) if path else Globs(include, exclude)


def _patterns(node: Any, what: str, fail: Any) -> tuple[str, ...]:
    values = _strings(node, what, fail)
    if len(values) > MAX_PATTERNS:
        raise fail(node, f"{what} has {len(values)} globs; at most {MAX_PATTERNS}")
    for value, vnode in zip(values, _items(node), strict=True):
        try:
            glob_regex(value)
        except ValueError as e:
            raise fail(vnode, f"{what}: invalid glob {value[:80]!r}: {e}") from None
    return tuple(values)


def _items(node: Any) -> list[Any]:
    import yaml

    return list(node.value) if isinstance(node, yaml.SequenceNode) else [node]


def _strings(node: Any, what: str, fail: Any) -> list[str]:
    """A string or a non-empty list of strings (Woodpecker's StringOrSlice)."""
    import yaml

    if isinstance(node, yaml.SequenceNode) and not node.value:
        raise fail(node, f"{what} is an empty list")
    if not isinstance(node, yaml.SequenceNode | yaml.ScalarNode):
        raise fail(node, f"{what} must be a string or a list of strings")
    return [_string(item, what, fail) for item in _items(node)]


# ---------------------------------------------------------------------- globs
_GLOB_CACHE: dict[str, re.Pattern[str]] = {}


def glob_match(pattern: str, value: str) -> bool:
    """doublestar's ``Match``: ``*`` and ``?`` stay inside one path segment, ``**`` as a whole segment
    spans any number of them (zero included), ``[...]``/``[!...]`` classes, ``{a,b}`` alternatives,
    ``\\`` escapes. The whole value must match."""
    rx = _GLOB_CACHE.get(pattern)
    if rx is None:
        rx = glob_regex(pattern)
        if len(_GLOB_CACHE) < 4096:
            _GLOB_CACHE[pattern] = rx
    return rx.fullmatch(value) is not None


def glob_regex(pattern: str) -> re.Pattern[str]:
    """The regex of a doublestar glob, or ValueError saying what is wrong with it."""
    if len(pattern) > 1024:
        raise ValueError("longer than 1024 characters")
    out: list[str] = []
    i, n, depth = 0, len(pattern), 0
    while i < n:
        c = pattern[i]
        if c == "*":
            j = i
            while j < n and pattern[j] == "*":
                j += 1
            whole = (i == 0 or pattern[i - 1] == "/") and (j == n or pattern[j] == "/")
            if j - i >= 2 and whole:
                if j == n:  # trailing **: everything below, and the directory itself ("a/**" matches "a")
                    if out and out[-1] == "/":
                        out[-1] = "(?:/.*)?"
                    else:
                        out.append(".*")
                    i = j
                else:  # **/ : zero or more directories
                    out.append("(?:[^/]*/)*")
                    i = j + 1
                continue
            out.append("[^/]*")
            i = j
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "\\":
            if i + 1 >= n:
                raise ValueError("it ends with a lone '\\'")
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif c == "[":
            j = i + 1
            negate = j < n and pattern[j] in "!^"
            if negate:
                j += 1
            start = j
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            if j >= n:
                raise ValueError("a '[' has no closing ']'")
            body = pattern[start:j]
            if not body:
                raise ValueError("an empty character class '[]'")
            cls = "".join("\\" + ch if ch in "\\^[]" else ch for ch in body.replace("\\", ""))
            out.append(f"[^/{cls}]" if negate else f"(?!/)[{cls}]")
            i = j + 1
        elif c == "{":
            depth += 1
            out.append("(?:")
            i += 1
        elif c == "}" and depth:
            depth -= 1
            out.append(")")
            i += 1
        elif c == "," and depth:
            out.append("|")
            i += 1
        elif c == "/":
            out.append("/")
            i += 1
        else:
            out.append(re.escape(c))
            i += 1
    if depth:
        raise ValueError("a '{' has no closing '}'")
    try:
        return re.compile("".join(out), re.DOTALL)
    except re.error as e:
        raise ValueError(str(e)) from None


# ---------------------------------------------------------------------- image steps
def _image(node: Any, what: str, fail: Any) -> ImageSpec:
    import yaml

    m = _mapping(node, what, fail)
    for key in m:
        if key not in _IMAGE_KEYS:
            raise fail(m[key][0], f"{what}: unknown key {key!r} (expected {', '.join(sorted(_IMAGE_KEYS))})")
    if "name" not in m:
        raise fail(node, f"{what}: `name` is required (<owner>/<repo>, the image's path in the registry)")
    name_node = m["name"][1]
    name = _string(name_node, f"{what}: `name`", fail)
    if len(name) > 255 or not IMAGE_NAME_RE.fullmatch(name):
        raise fail(name_node, f"{what}: name {name[:80]!r} is not an image name (<owner>/<repo>: lower-case "
                              "letters, digits and '.', '_', '-' between them, no tag, no registry host)")
    spec = ImageSpec(name)
    if "context" in m:
        spec.context = _rel_path(m["context"][1], f"{what}: `context`", fail)
    if "dockerfile" in m:
        spec.dockerfile = _rel_path(m["dockerfile"][1], f"{what}: `dockerfile`", fail)
        if spec.dockerfile == ".":
            raise fail(m["dockerfile"][1], f"{what}: `dockerfile` must name a file")
    if "tags" in m:
        tnode = m["tags"][1]
        tags = _strings(tnode, f"{what}: `tags`", fail)
        if len(tags) > MAX_TAGS:
            raise fail(tnode, f"{what}: `tags` has {len(tags)} entries; at most {MAX_TAGS}")
        for tag, item in zip(tags, _items(tnode), strict=True):
            for var in _TAG_VAR_RE.findall(tag):
                if var not in TAG_VARIABLES:
                    raise fail(item, f"{what}: tag {tag[:80]!r} uses ${{{var[:40]}}}; a tag may use only "
                                     f"{', '.join('${' + v + '}' for v in TAG_VARIABLES)}")
            try:  # the shape, with every variable standing in for a value of its kind
                expand_tags([tag], {"RAIBID_COMMIT": "0" * 40, "RAIBID_REF": "main", "RAIBID_PR": "1"})
            except ValueError as e:
                raise fail(item, f"{what}: {e}") from None
        spec.tags = tuple(dict.fromkeys(tags))
    if "platforms" in m:
        pnode = m["platforms"][1]
        platforms = _strings(pnode, f"{what}: `platforms`", fail)
        for value, item in zip(platforms, _items(pnode), strict=True):
            if value not in PLATFORMS:
                raise fail(item, f"{what}: unknown platform {value[:40]!r} (expected {', '.join(PLATFORMS)})")
        spec.platforms = tuple(dict.fromkeys(platforms))
    for key in ("push", "cache"):
        if key in m:
            v = m[key][1]
            if not isinstance(v, yaml.ScalarNode) or not v.tag.endswith(":bool"):
                raise fail(v, f"{what}: `{key}` must be true or false")
            setattr(spec, key, v.value.lower() in ("true", "yes", "on"))
    return spec


def _rel_path(node: Any, what: str, fail: Any) -> str:
    """A path inside the checkout: relative, no `..`, no NUL or backslash; normalised (`./a//b` is `a/b`)."""
    value = _string(node, what, fail)
    parts = [p for p in value.split("/") if p not in ("", ".")]
    if value.startswith("/") or "\\" in value or "\0" in value or ".." in parts or len(value) > 1024:
        raise fail(node, f"{what}: {value[:80]!r} must be a relative path inside the checkout (no `..`, "
                         "not absolute)")
    return "/".join(parts) or "."


# ---------------------------------------------------------------------- scalars
def _secrets(node: Any, what: str, fail: Any) -> list[str]:
    import re

    import yaml

    if not isinstance(node, yaml.SequenceNode):
        raise fail(node, f"{what} must be a list of names, e.g. [CRATES_TOKEN]")
    out: list[str] = []
    for item in node.value:
        if not isinstance(item, yaml.ScalarNode) or item.tag.endswith((":null", ":bool", ":int", ":float")) \
                or not re.fullmatch(_NAME, item.value):
            shown = repr(item.value[:60]) if isinstance(item, yaml.ScalarNode) else "an item"
            raise fail(item, f"{what}: {shown} is not a secret name (letters, digits and _, not starting "
                             "with a digit)")
        if item.value in out:
            raise fail(item, f"{what}: {item.value} is listed twice")
        out.append(item.value)
    return out


def _mapping(node: Any, what: str, fail: Any) -> dict[str, tuple[Any, Any]]:
    import yaml

    if not isinstance(node, yaml.MappingNode):
        raise fail(node, f"{what} must be a mapping")
    out: dict[str, tuple[Any, Any]] = {}
    for k, v in node.value:
        if not isinstance(k, yaml.ScalarNode):
            raise fail(k, f"{what}: keys must be names")
        out[k.value] = (k, v)
    return out


def _string(node: Any, what: str, fail: Any) -> str:
    import yaml

    if not isinstance(node, yaml.ScalarNode) or node.tag.endswith((":null", ":bool")) or node.value == "":
        raise fail(node, f"{what} must be a non-empty string")
    return node.value


def _timeout(node: Any, what: str, fail: Any) -> float:
    import yaml

    from raibid.errors import UsageError
    from raibid.timeutil import parse_duration

    if not isinstance(node, yaml.ScalarNode):
        raise fail(node, f"{what} must be seconds or a duration such as 10m")
    try:
        value = parse_duration(node.value)
    except UsageError:
        raise fail(node, f"{what}: invalid duration {node.value!r} (use e.g. 90s, 10m, 1h30m)") from None
    if value <= 0:
        raise fail(node, f"{what} must be positive")
    return value


def _env(node: Any, what: str, fail: Any) -> dict[str, str]:
    import re

    import yaml

    m = _mapping(node, what, fail)
    out = {}
    for key, (knode, vnode) in m.items():
        if not re.fullmatch(_NAME, key):
            raise fail(knode, f"{what}: invalid variable name {key!r}")
        if not isinstance(vnode, yaml.ScalarNode):
            raise fail(vnode, f"{what}: {key} must be a string")
        out[key] = vnode.value
    return out
