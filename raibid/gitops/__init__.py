"""GitOps: the cluster's desired state in a Gitea config repo that Flux reconciles (raibid's `flux bootstrap`).

``tree`` renders the folder, ``repo`` writes it through GitPython, ``flux``
points Flux at it and reads Flux's verdict, ``sync`` puts them together.
"""

from __future__ import annotations

from raibid.gitops.repo import PushRejected, RepoRef, parse_repo
from raibid.gitops.sync import SyncResult, Target, bootstrap, sync

__all__ = ["PushRejected", "RepoRef", "SyncResult", "Target", "bootstrap", "parse_repo", "sync"]
