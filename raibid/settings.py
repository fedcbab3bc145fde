"""The global options, recorded by the root command before any command runs (nothing heavy imported)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Settings:
    """Global options, as given on the command line or by env."""

    config_path: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    verbosity: int = 0
    color: bool | None = None
