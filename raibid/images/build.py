"""Build one of raibid's images in the cluster: a ConfigMap with the context, a rootless BuildKit Job,
its pod's log streamed and parsed, the Job's outcome.

Idempotent by name: the Job is ``raibid-image-<name>-<digest[:10]>`` (the tag's hash), so a second run for
the same context finds the Job that already built it. A failed Job of the same name is deleted first.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from urllib3 import BaseHTTPResponse

from raibid.errors import ConfigError, RaibidError, TimeoutError_
from raibid.images.catalog import ImageRef
from raibid.images.context import BuildContext
from raibid.images.progress import Progress

# moby/buildkit's rootless image, pinned (v0.32.2: the newest release tag of moby/buildkit, 2026-12-04).
BUILDKIT_IMAGE = "docker.io/moby/buildkit:v0.32.2-rootless"
CONTEXT_KEY = "context.tar.gz"
# A ConfigMap holds at most 1 MiB (etcd's object limit); binaryData is base64, 4/3 of the bytes.
CONFIGMAP_LIMIT = 1 << 20
PUSH_SECRET = "raibid-image-push"
PLATFORMS = ("linux/arm64", "linux/amd64")


@dataclass
class BuildResult:
    name: str
    image: str
    ok: bool
    job: str
    pushed: bool
    steps: int = 0
    steps_done: int = 0
    steps_cached: int = 0
    failed_step: str | None = None
    error: str | None = None
    seconds: float = 0.0
    reused: bool = False  # the Job for this exact context had already succeeded
    log_tail: list[str] = field(default_factory=list)


def job_name(image: ImageRef, ctx: BuildContext) -> str:
    return f"raibid-image-{image.name}-{ctx.digest[:10]}"


def configmap_name(ctx: BuildContext) -> str:
    return f"raibid-images-context-{ctx.digest[:12]}"


def context_configmap(ctx: BuildContext, namespace: str) -> dict[str, Any]:
    """The context as a ConfigMap (gzip'd tar in binaryData); an error when it cannot fit."""
    data = ctx.tarball()
    encoded = base64.b64encode(data).decode()
    if len(encoded) > CONFIGMAP_LIMIT - 4096:
        raise ConfigError(f"the build context is {len(data)} bytes compressed ({len(encoded)} as base64): more than "
                          "a ConfigMap holds (1 MiB)",
                          hint="keep large files out of raibid/ and templates/, or list them in "
                               "templates/images/.dockerignore")
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": configmap_name(ctx), "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "raibid", "app.kubernetes.io/part-of": "raibid",
                                    "app.kubernetes.io/component": "images"}},
            "binaryData": {CONTEXT_KEY: encoded}}


def push_problem(registry: str) -> str | None:
    """Why a build pod could not push to ``registry`` (host[:port]), or None.

    The pod pushes to the same address k3s pulls from, and Gitea's token realm is its ROOT_URL
    (``<gitea.url>/v2/token``): a loopback address there is the pod's own, not the node's.
    """
    import ipaddress

    host = registry.rsplit(":", 1)[0].strip("[]") if registry.count(":") <= 1 or registry.startswith("[") \
        else registry
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return (f"the registry {registry} is a loopback address: a build pod reaches its own loopback, not the "
                "node's, for the push and for Gitea's token realm (<gitea.url>/v2/token)")
    return None


def render_job(image: ImageRef, ctx: BuildContext, *, namespace: str, platforms: tuple[str, ...], push: bool,
               templates: Path, insecure: bool = False, deadline: int = 3600, push_secret: str = PUSH_SECRET,
               buildkit_image: str = BUILDKIT_IMAGE, cpu: str = "2", memory: str = "4Gi",
               cache_size: str = "20Gi") -> dict[str, Any]:
    import jinja2
    import yaml

    for p in platforms:
        if p not in PLATFORMS:
            raise ConfigError(f"platform {p!r} is not one of {', '.join(PLATFORMS)}")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)
    text = env.get_template("images/buildkit-job.yaml.j2").render(
        job_name=job_name(image, ctx), namespace=namespace, image_name=image.name, image_ref=image.ref,
        context_digest=ctx.digest, context_configmap=configmap_name(ctx), platforms=list(platforms), push=push,
        push_secret=push_secret, buildkit_image=buildkit_image, deadline=deadline, cpu=cpu, memory=memory,
        insecure=insecure,
        memory_limit=memory, cache_size=cache_size,
        # One platform: run on a node of that architecture, so nothing is emulated.
        node_arch=platforms[0].split("/")[1] if len(platforms) == 1 else None)
    return yaml.safe_load(text)


def push_secret(registry: str, username: str, token: str, namespace: str) -> dict[str, Any]:
    """The docker config.json BuildKit reads ($DOCKER_CONFIG/config.json) to push to ``registry``."""
    import json

    auth = base64.b64encode(f"{username}:{token}".encode()).decode()
    config = json.dumps({"auths": {registry: {"username": username, "password": token, "auth": auth}}})
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": PUSH_SECRET, "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "raibid", "app.kubernetes.io/part-of": "raibid",
                                    "app.kubernetes.io/component": "images"}},
            "data": {".dockerconfigjson": base64.b64encode(config.encode()).decode()}}


def wait_for(check: Callable[[], Any], *, timeout: float, interval: float, what: str) -> Any:
    """``check()`` until it returns something truthy, or a timeout error naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError_(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def _job_outcome(job: dict[str, Any] | None) -> str | None:
    for c in ((job or {}).get("status") or {}).get("conditions") or []:
        if c.get("status") == "True" and c.get("type") in ("Complete", "Failed"):
            return str(c["type"])
    return None


def run_build(kube: Any, image: ImageRef, ctx: BuildContext, job: dict[str, Any], *, push: bool,
              on_line: Callable[[str, Progress], None] = lambda line, p: None, timeout: float = 3600,
              interval: float = 1.0) -> BuildResult:
    """Create (or find) the Job, stream its pod's log into ``on_line``, wait for the Job, report."""
    started = time.monotonic()
    name, ns = job["metadata"]["name"], job["metadata"]["namespace"]
    result = BuildResult(image.name, image.ref, False, name, push)
    live = kube.get("batch/v1", "Job", name, ns)
    if _job_outcome(live) == "Complete":
        result.ok = result.reused = True
        return result
    if _job_outcome(live) == "Failed":
        kube.delete("batch/v1", "Job", name, ns, propagation="Background")
        wait_for(lambda: kube.get("batch/v1", "Job", name, ns) is None, timeout=120, interval=interval,
                 what=f"the failed Job {ns}/{name} to be deleted")
    kube.apply(job, force=True)
    selector = f"job-name={name}"

    def pod_started() -> str | None:
        for pod in kube.list("v1", "Pod", ns, label_selector=selector):
            phase = (pod.get("status") or {}).get("phase")
            if phase in ("Running", "Succeeded", "Failed"):
                return str(pod["metadata"]["name"])
        if _job_outcome(kube.get("batch/v1", "Job", name, ns)) == "Failed":
            raise RaibidError(f"Job {ns}/{name} failed before its pod ran",
                              hint=f"kubectl -n {ns} describe job {name}")
        return None

    pod = wait_for(pod_started, timeout=timeout, interval=interval, what=f"the pod of Job {ns}/{name}")
    progress = Progress()
    for line in stream_log(kube, pod, ns, container="buildkit"):
        progress.feed(line)
        result.log_tail = (result.log_tail + [line])[-20:]
        on_line(line, progress)
    outcome = wait_for(lambda: _job_outcome(kube.get("batch/v1", "Job", name, ns)), timeout=timeout,
                       interval=interval, what=f"Job {ns}/{name} to finish")
    result.ok = outcome == "Complete"
    result.steps, result.steps_done, result.steps_cached = (progress.total_steps, progress.steps_done,
                                                            progress.steps_cached)
    result.failed_step, result.error = progress.failed_step, progress.error
    if not result.ok and result.error is None:
        result.error = "the Job failed without a BuildKit error in its log"
    result.seconds = round(time.monotonic() - started, 1)
    return result


def stream_log(kube: Any, pod: str, namespace: str, *, container: str) -> Any:
    """The pod's log, line by line as it is written (``follow=true``), through the Kubernetes client."""
    from kubernetes import client

    from raibid.cluster.client import translate

    api = client.CoreV1Api(kube.api_client)
    with translate("read log", f"Pod/{pod}", namespace, kube.server):
        # The client types the log as str; with _preload_content=False it is the unread urllib3 response.
        resp = cast("BaseHTTPResponse", api.read_namespaced_pod_log(pod, namespace, container=container,
                                                                    follow=True, _preload_content=False))
    buf = b""
    try:
        for chunk in resp.stream(4096):
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                yield raw.decode("utf-8", "replace")
        if buf:
            yield buf.decode("utf-8", "replace")
    finally:
        resp.release_conn()
