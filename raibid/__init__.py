"""raibid: a one-shot CLI for a personal, scale-to-zero CI system on one k3s node."""

__version__ = "0.1.0"
