"""What the Gitea HelmChart's values need beyond the config: the host names from ``gitea.url``.

Gitea builds clone URLs and the registry's token realm from ``server.ROOT_URL``, SSH clone
URLs from ``server.SSH_DOMAIN``, and its own links from ``server.DOMAIN``; the chart leaves
``DOMAIN`` at ``git.example.com`` unless it is set, so all three come from ``gitea.url``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from raibid.errors import ConfigError, redact_url

if TYPE_CHECKING:
    from raibid.config import Config


def server_settings(url: str) -> dict[str, str]:
    """``server.DOMAIN``, ``SSH_DOMAIN`` and ``ROOT_URL`` for Gitea's app.ini, from its base URL."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise ConfigError(f"gitea.url {redact_url(url)} has no host", hint="e.g. http://192.168.1.10:30080")
    shown = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets
    netloc = shown + (f":{parts.port}" if parts.port else "")
    root = f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}/"
    return {"DOMAIN": shown, "SSH_DOMAIN": shown, "ROOT_URL": root}


def template_context(cfg: Config, namespace: str) -> dict[str, Any]:
    return {"gitea_server": server_settings(cfg.gitea.url)}
