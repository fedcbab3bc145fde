"""Finding raibid's own services in the cluster (for ``redis.url: auto``)."""

from __future__ import annotations

from raibid.cluster.client import Kube
from raibid.cluster.secrets import generated_secrets_from
from raibid.errors import ClusterError, NotFound


def discover_redis(kube: Kube, namespace: str) -> tuple[str, str | None]:
    """Find raibid's in-cluster Redis: the Service's ClusterIP and the Secret's password."""
    svc = kube.get("v1", "Service", "raibid-redis", namespace)
    if not svc:
        raise NotFound(f"Service raibid-redis not found in namespace {namespace}",
                       hint="run `raibid cluster up --component redis`, or set redis.url")
    ip = (svc.get("spec") or {}).get("clusterIP")
    if not ip or ip == "None":
        raise ClusterError(f"Service raibid-redis in namespace {namespace} has no cluster IP "
                           f"({'headless' if ip == 'None' else 'not assigned yet'}), so `redis.url: auto` cannot use it",
                           hint="`raibid cluster up -c redis` restores the ClusterIP Service; or set redis.url")
    port = next((p.get("port") for p in (svc.get("spec") or {}).get("ports", []) if p.get("name") == "redis"), 6379)
    secret = kube.get("v1", "Secret", "raibid-redis", namespace)
    password = generated_secrets_from([{**secret, "kind": "Secret"}] if secret else [], namespace).get("redis_password")
    return f"redis://{ip}:{port}/0", password
