"""The cluster engine: Kubernetes client and error translation, rendering, apply, diff, readiness, prune.

Modules take plain values (a ``Kube``, a ``Config``, manifests) and know nothing
of the CLI. ``kubernetes`` and ``jinja2`` are imported only inside the functions
that talk to the API server or render templates.
"""
