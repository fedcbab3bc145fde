"""The import rules of the layout (docs/architecture.md), checked with an AST walk over raibid/."""

from __future__ import annotations

import ast
from pathlib import Path

import raibid

ROOT = Path(raibid.__file__).resolve().parent

# Domain code takes plain values; it never reaches back into the CLI, the composition root,
# the terminal or the doctor (which sit above it).
DOMAIN = ("cluster", "queue", "gitea", "github", "config", "agents", "mirror", "gitops", "webhook", "images",
          "local", "errors", "timeutil", "yamlio", "settings", "http", "fileio", "gitcreds", "safetext")
ABOVE_DOMAIN = ("raibid.cli", "raibid.app", "raibid.terminal", "raibid.doctor")
# Imported only inside the functions that need them: a module-level import costs every run and every TAB.
HEAVY = ("kubernetes", "redis", "git", "jinja2", "yaml", "requests", "urllib3", "rich")


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append((".".join(parts), path))
    return out


def _imports(path: Path, *, top_level_only: bool) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.If) and top_level_only:
            continue  # `if TYPE_CHECKING:` blocks are not run
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _is_domain(module: str) -> bool:
    return module.split(".")[1] in DOMAIN if module.count(".") >= 1 else False


def test_the_walk_sees_every_package():
    names = {m for m, _ in _modules()}
    for expected in ("raibid.cluster.apply", "raibid.queue.worker", "raibid.gitea.client", "raibid.config.loader",
                     "raibid.cli.queue", "raibid.doctor"):
        assert expected in names


def test_domain_never_imports_cli_app_terminal_or_doctor():
    bad = []
    for module, path in _modules():
        if not _is_domain(module):
            continue
        for line, imported in _imports(path, top_level_only=False):
            if imported.startswith(ABOVE_DOMAIN):
                bad.append(f"{path.relative_to(ROOT.parent)}:{line} imports {imported}")
    assert bad == []


def test_no_module_imports_a_heavy_library_at_import_time():
    bad = []
    for _, path in _modules():
        for line, imported in _imports(path, top_level_only=True):
            if imported.split(".")[0] in HEAVY:
                bad.append(f"{path.relative_to(ROOT.parent)}:{line} imports {imported}")
    assert bad == []


def test_cli_modules_use_the_application_only_through_pass_app():
    # click.pass_obj would hand commands the raw Settings the root records, not an Application.
    bad = [str(p.relative_to(ROOT.parent)) for m, p in _modules()
           if m.startswith("raibid.cli") and "@click.pass_obj" in p.read_text(encoding="utf-8")]
    assert bad == []


def test_top_takes_plain_values_not_the_cli_or_the_application():
    # raibid.top draws with Rich (it may use raibid.terminal's formatting) but gets its clients as factories.
    bad = []
    for module, path in _modules():
        if not module.startswith("raibid.top"):
            continue
        for line, imported in _imports(path, top_level_only=False):
            if imported.startswith(("raibid.cli", "raibid.app", "raibid.doctor")):
                bad.append(f"{path.relative_to(ROOT.parent)}:{line} imports {imported}")
    assert bad == []
    assert "raibid.top.collect" in {m for m, _ in _modules()}
