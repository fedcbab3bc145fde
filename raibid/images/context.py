"""The build context: raibid itself, the same bytes from a checkout or an installed wheel.

The context is a fixed set of files: ``pyproject.toml``, ``README.md``, the
``raibid`` package and ``templates/`` (which holds ``templates/images/*``), with
``templates/images/.dockerignore`` also at the root. A checkout has them in
place; a wheel carries ``pyproject.toml`` and ``README.md`` under
``raibid/_build/`` and the templates under ``raibid/_templates/`` (see
``pyproject.toml``), so both give the same files and the same tag. Inside the
Job, ``pip install`` builds raibid's wheel from it with hatchling, as
``python -m build`` would from the sdist.

The tag is ``<raibid version>-<12 hex of sha256 over (path, mode, bytes)>``:
no timestamps, owners or tar layout enter it, so the same files always give the
same tag and any changed byte gives a new one.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from raibid.errors import ConfigError

DOCKERIGNORE = "templates/images/.dockerignore"
_SKIP_DIRS = {"__pycache__", "_templates", "_build"}
_TAG_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class BuildContext:
    """The context's files (path -> (mode, bytes)), sorted by path, and its digest."""

    files: tuple[tuple[str, int, bytes], ...]
    digest: str  # sha256 hex
    version: str

    @property
    def tag(self) -> str:
        return image_tag(self.version, self.digest)

    @property
    def size(self) -> int:
        return sum(len(data) for _, _, data in self.files)

    def tarball(self) -> bytes:
        """A deterministic ``.tar.gz`` (mtime 0, uid/gid 0, sorted): what the Job's ConfigMap carries."""
        import gzip
        import tarfile

        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path, mode, data in self.files:
                info = tarfile.TarInfo(path)
                info.size, info.mode, info.mtime = len(data), mode, 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
        return gzip.compress(raw.getvalue(), compresslevel=9, mtime=0)


def image_tag(version: str, digest: str) -> str:
    """``<version>-<digest[:12]>``; characters a tag may not hold (``+`` of a local version) become ``_``."""
    return f"{_TAG_CHARS.sub('_', version)}-{digest[:12]}"


def source_roots() -> tuple[Path, Path, Path, Path]:
    """(package dir, pyproject.toml, README.md, templates dir) of this installation."""
    package = Path(__file__).resolve().parent.parent
    checkout = package.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "templates").is_dir():
        return package, checkout / "pyproject.toml", checkout / "README.md", checkout / "templates"
    build = package / "_build"
    if (build / "pyproject.toml").is_file() and (package / "_templates").is_dir():
        return package, build / "pyproject.toml", build / "README.md", package / "_templates"
    raise ConfigError("raibid's build context is incomplete in this installation (no pyproject.toml)",
                      hint="install raibid from its wheel or a checkout, or set agents.image_tag")


def collect(package: Path, pyproject: Path, readme: Path, templates: Path, version: str) -> BuildContext:
    """The context of the files at these places (``source_roots()`` gives this installation's)."""
    found: dict[str, tuple[int, bytes]] = {}

    def add(rel: str, path: Path) -> None:
        mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
        found[rel] = (mode, path.read_bytes())

    add("pyproject.toml", pyproject)
    add("README.md", readme)
    for base, prefix in ((package, "raibid"), (templates, "templates")):
        for path in sorted(base.rglob("*")):
            rel_parts = path.relative_to(base).parts
            if path.is_dir() or any(p in _SKIP_DIRS for p in rel_parts) or path.suffix == ".pyc":
                continue
            add("/".join((prefix, *rel_parts)), path)
    ignore = _patterns(found.get(DOCKERIGNORE, (0, b""))[1].decode())
    found = {p: v for p, v in found.items() if not ignored(p, ignore)}
    if DOCKERIGNORE in found:
        found[".dockerignore"] = found[DOCKERIGNORE]
    files = tuple((p, m, d) for p, (m, d) in sorted(found.items()))
    h = hashlib.sha256()
    for name, mode, data in files:
        h.update(f"{name}\0{mode:o}\0{len(data)}\0".encode())
        h.update(data)
    return BuildContext(files, h.hexdigest(), version)


@lru_cache(maxsize=1)
def current() -> BuildContext:
    """This installation's context (computed once per process: a few hundred small files)."""
    from raibid import __version__

    return collect(*source_roots(), version=__version__)


def _patterns(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether a ``.dockerignore`` pattern excludes ``path`` or one of its parent directories."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pat in patterns:
        pat = pat.rstrip("/")
        bare = pat.removeprefix("**/")
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pat) or (pat.startswith("**/") and (
                    fnmatch.fnmatchcase(prefix.rsplit("/", 1)[-1], bare) or fnmatch.fnmatchcase(prefix, bare))):
                return True
    return False
