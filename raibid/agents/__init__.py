"""Agents: the types (``types``), their KEDA pools (``pools``), why a pool scales (``explain``),
and the one-job runtime that runs in each agent pod (``runtime``, ``pipeline``)."""
