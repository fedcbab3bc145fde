"""Gitea: the API client (``client``), its records (``models``), credentials and the registry config."""

from __future__ import annotations

from raibid.gitea.client import Gitea, split_repo
from raibid.gitea.models import DEFAULT_SCOPES, VISIBILITIES, Hook, Org, Repo, Status, Token

__all__ = ["DEFAULT_SCOPES", "VISIBILITIES", "Gitea", "Hook", "Org", "Repo", "Status", "Token", "split_repo"]
