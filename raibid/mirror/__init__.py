"""GitHub -> Gitea mirroring: resolution of the config into repos, the git engine, the sync orchestration."""

from __future__ import annotations

from raibid.mirror.lock import SyncLock
from raibid.mirror.model import ListEntry, RepoResult, Resolved, StatusRow, Summary
from raibid.mirror.resolve import TargetIndex, resolve
from raibid.mirror.sync import Options, Syncer, Trigger

__all__ = ["ListEntry", "Options", "RepoResult", "Resolved", "StatusRow", "Summary", "SyncLock", "Syncer",
           "TargetIndex", "Trigger", "resolve"]
