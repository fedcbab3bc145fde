"""Gitea's rules for owner (user or organisation) and repository names, checked before any URL is built.

A name goes into a URL path, so a name Gitea would never accept (``..``, ``r1?x=1``,
``a/b``) must be refused here rather than sent: ``repo delete 'org/r1?x=1'`` used to
delete ``org/r1``. The rules follow Gitea's own validation:

- owner: ``IsValidUsername``: starts with a letter or digit, then letters, digits,
  ``-``, ``_`` and ``.``; no two of ``-._`` in a row and none at the end; at most 40
  characters. This also excludes ``.`` and ``..``.
- repository: ``IsUsableRepoName``: letters, digits, ``-``, ``_`` and ``.`` (a leading
  dot is allowed: ``.profile``); not ``.``, ``..`` or ``-``; no ``..``; not ending in
  ``.git``, ``.wiki``, ``.rss`` or ``.atom``; at most 100 characters.
"""

from __future__ import annotations

import re

from raibid.errors import UsageError

OWNER_MAX = 40
REPO_MAX = 100
_OWNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_REPO = re.compile(r"[A-Za-z0-9_.-]+")
_RESERVED_REPO_SUFFIXES = (".git", ".wiki", ".rss", ".atom")
_ALLOWED = "letters, digits, '-', '_' and '.'"


def owner_problem(name: str) -> str | None:
    """Why Gitea would refuse ``name`` as a user or organisation name, or None."""
    if not name:
        return "it is empty"
    if len(name) > OWNER_MAX:
        return f"it is longer than {OWNER_MAX} characters"
    if not _OWNER.fullmatch(name):
        return f"it must start with a letter or digit and contain only {_ALLOWED}"
    if re.search(r"[-._]{2,}", name):
        return "two of '-', '_' and '.' may not follow each other"
    if name[-1] in "-._":
        return "it may not end with '-', '_' or '.'"
    return None


def repo_problem(name: str) -> str | None:
    """Why Gitea would refuse ``name`` as a repository name, or None."""
    if not name:
        return "it is empty"
    if len(name) > REPO_MAX:
        return f"it is longer than {REPO_MAX} characters"
    if not _REPO.fullmatch(name):
        return f"it may contain only {_ALLOWED}"
    if name in (".", "..", "-") or ".." in name:
        return "'.', '..', '-' and names containing '..' are reserved"
    if name.lower().endswith(_RESERVED_REPO_SUFFIXES):
        return "it may not end with " + ", ".join(_RESERVED_REPO_SUFFIXES)
    return None


def check_owner(name: str) -> str:
    """``name`` if Gitea accepts it as a user or organisation name; a UsageError (exit 2) otherwise."""
    problem = owner_problem(name)
    if problem:
        raise UsageError(f"invalid Gitea owner {name!r}: {problem}")
    return name


def check_repo(name: str) -> str:
    """``name`` if Gitea accepts it as a repository name; a UsageError (exit 2) otherwise."""
    problem = repo_problem(name)
    if problem:
        raise UsageError(f"invalid Gitea repository name {name!r}: {problem}")
    return name


def split_repo(full: str) -> tuple[str, str]:
    """``OWNER/NAME`` into its two validated parts."""
    owner, sep, name = full.partition("/")
    if not sep or not owner or not name or "/" in name:
        raise UsageError(f"invalid repository {full!r}: expected OWNER/NAME")
    return check_owner(owner), check_repo(name)
