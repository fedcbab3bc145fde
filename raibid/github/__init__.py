"""The GitHub REST API, as far as the mirror needs it (listing and looking up repositories)."""

from __future__ import annotations

from raibid.github.client import GitHub, GitHubRepo, RateLimited

__all__ = ["GitHub", "GitHubRepo", "RateLimited"]
