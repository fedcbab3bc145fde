"""The webhook receiver: Gitea and GitHub push events become builds at once (see docs/webhooks.md).

Modules: ``signature`` (HMAC checks), ``events`` (push payloads), ``receiver`` (the WSGI
application), ``trigger`` (which pushes build, and the deduplicated enqueue), ``mirrors``
(which GitHub repos raibid mirrors, and where), ``worker`` (the bounded background sync
worker that coalesces bursts per repo), ``register`` (creating the hooks) and ``status``.
Nothing here imports Click or the Application: `raibid webhook serve` wires plain values in.
"""

from __future__ import annotations
