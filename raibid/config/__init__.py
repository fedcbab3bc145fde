"""Config: the typed model (``model``), its loader (``loader``) and the commented default file (``template``)."""

from __future__ import annotations

from raibid.config.loader import (
    default_search_paths,
    env_var_for,
    find_config,
    leaf_keys,
    load_config,
    schema_keys,
)
from raibid.config.model import (
    AgentsConfig,
    AgentType,
    Config,
    GiteaConfig,
    MirrorConfig,
    QueueConfig,
    RedisConfig,
)
from raibid.config.template import commented_default_yaml

__all__ = [
    "AgentType", "AgentsConfig", "Config", "GiteaConfig", "MirrorConfig", "QueueConfig", "RedisConfig",
    "commented_default_yaml", "default_search_paths", "env_var_for", "find_config", "leaf_keys", "load_config",
    "schema_keys",
]
