"""Gitea's OCI registry as k3s's containerd sees it: ``/etc/rancher/k3s/registries.yaml``."""

from __future__ import annotations

from typing import Any

from raibid.errors import UsageError, redact_url


def registries_yaml(gitea_url: str, username: str, token: str | None) -> str:
    """k3s /etc/rancher/k3s/registries.yaml for Gitea's registry.

    containerd resolves names with the host's DNS, not cluster DNS, so the host
    must be a node IP or hostname the node resolves, with the NodePort.
    """
    from urllib.parse import urlsplit

    from raibid.yamlio import dump

    parts = urlsplit(gitea_url)
    host = parts.netloc.rpartition("@")[2]
    if not host:
        raise UsageError(f"gitea.url {redact_url(gitea_url)} has no host")
    endpoint = f"{parts.scheme or 'http'}://{host}"
    doc: dict[str, Any] = {"mirrors": {host: {"endpoint": [endpoint]}},
                           "configs": {host: {"auth": {"username": username, "password": token or ""}}}}
    if parts.scheme == "https":
        doc["configs"][host]["tls"] = {"insecure_skip_verify": False}
    head = ("# k3s registry config for Gitea's OCI registry, written by `raibid gitea registry config`.\n"
            "# k3s reads this file only when it starts: sudo systemctl restart k3s\n")
    return head + dump(doc)
