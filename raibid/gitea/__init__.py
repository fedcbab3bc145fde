"""Gitea: the API client (``client``), its records (``models``), name rules, credentials and the registry config."""

from __future__ import annotations

from raibid.gitea.client import Gitea, api_path
from raibid.gitea.models import DEFAULT_SCOPES, VISIBILITIES, Hook, Org, Repo, Status, Token
from raibid.gitea.names import check_owner, check_repo, split_repo

__all__ = ["DEFAULT_SCOPES", "VISIBILITIES", "Gitea", "Hook", "Org", "Repo", "Status", "Token", "api_path",
           "check_owner", "check_repo", "split_repo"]
