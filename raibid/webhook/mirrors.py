"""Which GitHub repositories raibid mirrors, and the Gitea repository each one lands in.

Read from the mirror config without the network, so the receiver can tell at once
whether a GitHub push concerns it: ``mirror.repos`` (``OWNER/NAME`` or ``{source, target}``),
the ``mirror.lists`` files, and ``mirror.orgs`` entries (their ``include``/``exclude``
regexes, ``forks``, ``archived`` and ``target_org``), as `raibid.mirror.resolve` reads
them. A mirrored ``OWNER/NAME`` lands in ``<target_org>/NAME`` unless its entry names a target.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raibid.config.model import MirrorConfig


@dataclass
class OwnerRule:
    owner: str
    target_org: str
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    forks: bool = False
    archived: bool = False

    def matches(self, name: str, *, fork: bool = False, archived: bool = False) -> bool:
        if (fork and not self.forks) or (archived and not self.archived):
            return False
        if self.include and not any(re.search(rx, name) for rx in self.include):
            return False
        return not any(re.search(rx, name) for rx in self.exclude)


@dataclass
class MirrorSet:
    target_org: str
    repos: dict[str, tuple[str, str]] = field(default_factory=dict)  # lower-case source -> (source, target)
    owners: list[OwnerRule] = field(default_factory=list)

    @classmethod
    def from_config(cls, m: MirrorConfig, *, lists: bool = True, base_dir: Path | None = None) -> MirrorSet:
        """From the `mirror:` section; ``lists=False`` where the list files are not at hand (the pod)."""
        from raibid.mirror.resolve import read_list

        out = cls(m.target_org)
        for item in m.repos:
            source, target = (item, None) if isinstance(item, str) else (item.source, item.target)
            out.add(source, target)
        for list_file in m.lists if lists else ():
            path = Path(list_file).expanduser()
            path = path if path.is_absolute() else (base_dir or Path.cwd()) / path
            for _, source in read_list(path):
                out.add(source)
        for o in m.orgs:
            out.owners.append(OwnerRule(o.name, o.target_org or m.target_org, list(o.include), list(o.exclude),
                                        o.forks, o.archived))
        return out

    @classmethod
    def of(cls, target_org: str, repos: Iterable[str] = (), owners: Iterable[Any] = ()) -> MirrorSet:
        """A set built by hand (tests, scripts): repos as OWNER/NAME, owners as names or `OwnerRule`s."""
        out = cls(target_org)
        for r in repos:
            out.add(r)
        for o in owners:
            out.owners.append(o if isinstance(o, OwnerRule) else OwnerRule(str(o), target_org))
        return out

    def add(self, source: str, target: str | None = None) -> None:
        key = source.lower()
        if key not in self.repos:  # the first entry naming a source wins, as in the mirror
            self.repos[key] = (source, target or f"{self.target_org}/{source.split('/', 1)[1]}")

    def target(self, source: str, *, fork: bool = False, archived: bool = False) -> str | None:
        """The Gitea ``ORG/NAME`` that mirrors GitHub ``source``, or None when raibid does not mirror it."""
        named = self.repos.get(source.lower())
        if named is not None:
            return named[1]
        owner, _, name = source.partition("/")
        for rule in self.owners:
            if rule.owner.lower() == owner.lower() and rule.matches(name, fork=fork, archived=archived):
                return f"{rule.target_org}/{name}"
        return None
