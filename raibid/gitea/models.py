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
class TokenInfo:
    """A token as Gitea lists it: never the value, only its name, scopes and last eight characters."""
    id: int
    name: str
    scopes: list[str]
    last_eight: str

    @classmethod
    def from_api(cls, d: dict) -> TokenInfo:
        return cls(id=int(d["id"]), name=str(d["name"]), scopes=list(d.get("scopes") or []),
                   last_eight=d.get("token_last_eight") or "")


@dataclass
class User:
    login: str
    is_admin: bool
    restricted: bool = False

    @classmethod
    def from_api(cls, d: dict) -> User:
        login = d["login"]
        if not isinstance(login, str):
            raise TypeError(login)
        return cls(login=login, is_admin=bool(d.get("is_admin")), restricted=bool(d.get("restricted")))


@dataclass
class Team:
    id: int
    name: str
    permission: str
    units_map: dict[str, str]
    can_create_org_repo: bool
    includes_all_repositories: bool

    @classmethod
    def from_api(cls, d: dict) -> Team:
        return cls(id=int(d["id"]), name=str(d["name"]), permission=d.get("permission") or "",
                   units_map=dict(d.get("units_map") or {}), can_create_org_repo=bool(d.get("can_create_org_repo")),
                   includes_all_repositories=bool(d.get("includes_all_repositories")))


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
