"""The images raibid deploys and builds, and the exact reference each pod uses.

One image per toolchain (``templates/images/<name>/Dockerfile``): ``raibid`` (the
generic agent, the mirror CronJob and the webhook receiver), ``rust``,
``python``, ``node``, ``go`` and ``gpu``. Each lives in Gitea's registry under the
``raibid`` org: ``<registry>/raibid/raibid`` and ``<registry>/raibid/agent-<type>``.
docs/agents.md says why the build container is not an upstream toolchain image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raibid.config import Config

ORG = "raibid"
# Image name -> the agent types whose pods run it by default.
IMAGES: dict[str, tuple[str, ...]] = {
    "raibid": ("generic", "image"),
    "rust": ("rust",),
    "python": ("python",),
    "node": ("node",),
    "go": ("go",),
    "gpu": ("gpu",),
}


@dataclass(frozen=True)
class ImageRef:
    name: str  # the catalogue name: raibid, rust, ...
    registry: str  # host[:port]
    repository: str  # raibid/raibid, raibid/agent-rust
    tag: str

    @property
    def ref(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"


def repository(name: str) -> str:
    return f"{ORG}/raibid" if name == "raibid" else f"{ORG}/agent-{name}"


def image_for_type(type_name: str) -> str | None:
    """The catalogue image a built-in type runs, or None (a plugin's own image)."""
    for name, types in IMAGES.items():
        if type_name in types:
            return name
    return None


def default_tag(cfg: Config) -> str:
    """``agents.image_tag`` when set, else the tag of this installation's build context."""
    if cfg.agents.image_tag:
        return cfg.agents.image_tag
    from raibid.images.context import current

    return current().tag


def ref(cfg: Config, name: str, tag: str | None = None) -> ImageRef:
    from raibid.agents.types import default_registry

    return ImageRef(name, default_registry(cfg), repository(name), tag or default_tag(cfg))


def raibid_image(cfg: Config) -> str:
    """The image of raibid's own pods (mirror CronJob, webhook receiver) unless the config names one."""
    return ref(cfg, "raibid").ref


def deployed(cfg: Config) -> list[ImageRef]:
    """Every catalogue image a rendered pod references: raibid's, and each enabled type's default image."""
    from raibid.agents.types import enabled_types

    names = ["raibid"]
    for spec in enabled_types(cfg).values():
        name = image_for_type(spec.extends or spec.name)
        if name and name not in names and spec.image == ref(cfg, name).ref:
            names.append(name)
    return [ref(cfg, n) for n in names]
