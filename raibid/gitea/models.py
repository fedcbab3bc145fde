"""What the Gitea API returns, as typed records (built from Gitea's JSON field names)."""

from __future__ import annotations

from dataclasses import dataclass, field

# Scopes of a token raibid creates, and Gitea's org visibilities.
DEFAULT_SCOPES = ("write:repository", "write:organization", "write:package", "read:user")
VISIBILITIES = ("public", "limited", "private")


@dataclass
class Repo:
    owner: str
    name: str
    full_name: str
    private: bool
    mirror: bool
    empty: bool
    clone_url: str
    html_url: str
    original_url: str = ""
    default_branch: str = "main"
    description: str = ""
    archived: bool = False

    @classmethod
    def from_api(cls, d: dict) -> Repo:
        owner = (d.get("owner") or {}).get("login") or d.get("full_name", "/").split("/")[0]
        return cls(owner=owner, name=d["name"], full_name=d.get("full_name") or f"{owner}/{d['name']}",
                   private=bool(d.get("private")), mirror=bool(d.get("mirror")), empty=bool(d.get("empty")),
                   clone_url=d.get("clone_url", ""), html_url=d.get("html_url", ""),
                   original_url=d.get("original_url") or "", default_branch=d.get("default_branch") or "main",
                   description=d.get("description") or "", archived=bool(d.get("archived")))


@dataclass
class Org:
    name: str
    visibility: str
    description: str = ""

    @classmethod
    def from_api(cls, d: dict) -> Org:
        return cls(name=d.get("username") or d.get("name", ""), visibility=d.get("visibility", "public"),
                   description=d.get("description") or "")


@dataclass
class Hook:
    id: int
    type: str
    url: str
    content_type: str
    events: list[str]
    active: bool
    branch_filter: str = ""

    @classmethod
    def from_api(cls, d: dict) -> Hook:
        cfg = d.get("config") or {}
        return cls(id=int(d["id"]), type=d.get("type", ""), url=cfg.get("url", ""),
                   content_type=cfg.get("content_type", ""), events=list(d.get("events") or []),
                   active=bool(d.get("active")), branch_filter=d.get("branch_filter") or "")


@dataclass
class Token:
    name: str
    scopes: list[str]
    last_eight: str
    value: str = field(repr=False, default="")  # shown once; never logged


@dataclass
class Status:
    url: str
    reachable: bool
    version: str | None = None
    registry_enabled: bool | None = None
    token_source: str | None = None
    token_valid: bool | None = None
    token_user: str | None = None
    admin_user: str = ""
    admin_exists: bool | None = None
    error: str | None = None
