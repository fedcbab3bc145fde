"""Which GitHub repositories raibid mirrors, and the Gitea repository each one lands in.

Read from the mirror config without the network, so the receiver can tell at once whether
a GitHub push concerns it: ``mirror.repos``, the ``mirror.lists`` files, and ``mirror.orgs``
entries (an owner name, or a mapping with ``name`` and optional ``include``/``exclude``
regexes on the repository name). A mirrored ``OWNER/NAME`` lands in ``<target_org>/NAME``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raibid.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


@dataclass
class OwnerRule:
    owner: str
    include: re.Pattern[str] | None = None
    exclude: re.Pattern[str] | None = None

    def matches(self, name: str) -> bool:
        return ((self.include is None or bool(self.include.search(name)))
                and (self.exclude is None or not self.exclude.search(name)))


@dataclass
class MirrorSet:
    target_org: str
    repos: dict[str, str] = field(default_factory=dict)  # lower-case OWNER/NAME -> as configured
    owners: list[OwnerRule] = field(default_factory=list)

    @classmethod
    def from_config(cls, target_org: str, repos: Iterable[str], lists: Iterable[str],
                    orgs: Iterable[Any]) -> MirrorSet:
        names = [_repo(r, "mirror.repos") for r in repos]
        for path in lists:
            names += _read_list(Path(path).expanduser())
        return cls(target_org, {n.lower(): n for n in names}, [_owner_rule(o) for o in orgs])

    def target(self, source: str) -> str | None:
        """The Gitea ``OWNER/NAME`` that mirrors GitHub ``source``, or None when raibid does not mirror it."""
        owner, _, name = source.partition("/")
        if source.lower() in self.repos or any(r.owner.lower() == owner.lower() and r.matches(name)
                                               for r in self.owners):
            return f"{self.target_org}/{name}"
        return None

    def rules_for(self, owner: str) -> list[OwnerRule]:
        return [r for r in self.owners if r.owner.lower() == owner.lower()]

    def listed(self) -> list[str]:
        """The repositories named one by one (org entries need the GitHub API to expand)."""
        return sorted(self.repos.values(), key=str.lower)


def _repo(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value.strip()):
        raise ConfigError(f"{where}: {value!r} is not OWNER/NAME")
    return value.strip()


def _read_list(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"mirror.lists: cannot read {path}: {e.strerror}") from None
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(_repo(line, f"{path}:{n}"))
    return out


def _owner_rule(entry: Any) -> OwnerRule:
    if isinstance(entry, str):
        return OwnerRule(entry.strip())
    if isinstance(entry, dict) and isinstance(entry.get("name"), str):
        def rx(key: str) -> re.Pattern[str] | None:
            value = entry.get(key)
            if value is None:
                return None
            try:
                return re.compile(str(value))
            except re.error as e:
                raise ConfigError(f"mirror.orgs[{entry['name']}].{key}: invalid regex: {e}") from None
        return OwnerRule(entry["name"], rx("include"), rx("exclude"))
    raise ConfigError(f"mirror.orgs: {entry!r} is neither an owner name nor a mapping with `name`")
