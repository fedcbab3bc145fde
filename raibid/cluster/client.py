"""Kubernetes access: one client per caller, typed errors at the boundary.

Everything here goes through ``kubernetes.config.new_client_from_config`` and
the DynamicClient; no global client state is touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from raibid.cluster.labels import FIELD_MANAGER
from raibid.errors import (
    AlreadyExists,
    AuthError,
    ClusterError,
    ConfigError,
    ConflictError,
    InvalidError,
    NotFound,
    Unreachable,
)

# A Kubernetes object as the API returns it (a dict from JSON).
KubeObject = dict[str, Any]


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "raibid"


def status_body(body: Any) -> tuple[str, str | None]:
    """(human message, reason) from a Kubernetes Status body, or the raw text and None."""
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            data = json.loads(body)
        except ValueError:
            return body.strip()[:500], None
    else:
        data = body
    if isinstance(data, dict):
        return str(data.get("message") or data.get("reason") or data), data.get("reason")
    return str(data), None


@contextlib.contextmanager
def translate(verb: str, what: str, namespace: str | None = None, server: str | None = None) -> Iterator[None]:
    """Map kubernetes/urllib3 exceptions to raibid's typed errors.

    ``verb`` and ``what`` name the request (``apply``, ``Deployment/redis``),
    so a 403 says exactly which permission is missing.
    """
    from kubernetes.client.exceptions import ApiException
    from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError
    from urllib3.exceptions import HTTPError as Urllib3Error

    where = f" in namespace {namespace}" if namespace else ""
    try:
        yield
    except ResourceNotFoundError as e:
        raise NotFound(f"the cluster does not serve {what}: {e}",
                       hint="is the CRD installed? `raibid doctor` checks the CRDs") from None
    except (ApiException, DynamicApiError) as e:
        status = int(getattr(e, "status", 0) or 0)
        body = getattr(e, "body", None)
        msg, reason = status_body(body) if body else (getattr(e, "reason", None) or str(e), None)
        if status in (401, 403):
            raise AuthError(f"{verb} {what}{where}: forbidden ({status}): {msg}",
                            hint="check the kubeconfig user and its RBAC permissions") from None
        if status == 404:
            raise NotFound(f"{verb} {what}{where}: not found: {msg}") from None
        if status == 409:
            if reason == "AlreadyExists":
                raise AlreadyExists(f"{verb} {what}{where}: {msg}") from None
            raise ConflictError(f"{verb} {what}{where}: conflict: {msg}",
                                hint="re-run with --force-conflicts to take ownership of these fields") from None
        if status == 422:
            raise InvalidError(f"{verb} {what}{where}: rejected by the API server: {msg}") from None
        if status == 0:
            raise Unreachable(f"{verb} {what}: cannot reach the API server{_at(server)}: {msg}") from None
        raise ClusterError(f"{verb} {what}{where}: API server error {status}: {msg}") from None
    except Urllib3Error as e:
        reason = getattr(e, "reason", None) or e
        raise Unreachable(f"cannot reach the API server{_at(server)}: {reason}",
                          hint="is k3s running? check --kubeconfig and --context") from None
    except OSError as e:
        raise Unreachable(f"cannot reach the API server{_at(server)}: {e}") from None


def _at(server: str | None) -> str:
    return f" at {server}" if server else ""


class Kube:
    """A thin, typed facade over one ApiClient and its DynamicClient."""

    def __init__(self, api_client: Any, *, cache_dir: Path | None = None) -> None:
        self.api_client = api_client
        self.server: str = api_client.configuration.host
        self._cache_dir = cache_dir or _cache_dir()
        self._dyn: Any = None

    @classmethod
    def from_kubeconfig(cls, path: str, context: str | None = None) -> Kube:
        from kubernetes import config as kconfig
        from kubernetes.config.config_exception import ConfigException

        if not os.path.exists(path):
            raise ConfigError(f"kubeconfig not found: {path}",
                              hint="on k3s: export KUBECONFIG=/etc/rancher/k3s/k3s.yaml, or pass --kubeconfig")
        from kubernetes.client import Configuration

        cfg = Configuration()
        # Fail fast when the API server is down: no urllib3 retry storm. Set before
        # the client exists, because its connection pool reads it once.
        cfg.retries = 0
        try:
            client = kconfig.new_client_from_config(config_file=path, context=context, persist_config=False,
                                                    client_configuration=cfg)
        except ConfigException as e:
            raise ConfigError(f"kubeconfig {path}: {e}") from None
        except Exception as e:  # yaml errors and friends from a broken kubeconfig
            raise ConfigError(f"kubeconfig {path} is not usable: {e}") from None
        return cls(client)

    # ------------------------------------------------------------------ discovery
    @property
    def dynamic(self) -> Any:
        if self._dyn is None:
            from kubernetes.dynamic import DynamicClient

            self._cache_dir.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256(self.server.encode()).hexdigest()[:16]
            cache = self._cache_dir / f"discovery-{digest}.json"
            try:
                with translate("discover", "API resources", server=self.server):
                    self._dyn = DynamicClient(self.api_client, cache_file=str(cache))
            except ValueError as e:  # the client's word for a dropped or non-HTTP connection
                raise Unreachable(f"cannot reach the API server at {self.server}: {e}",
                                  hint="is k3s running? check --kubeconfig and --context") from None
        return self._dyn

    def resource(self, api_version: str, kind: str) -> Any:
        with translate("discover", f"{kind} ({api_version})", server=self.server):
            return self.dynamic.resources.get(api_version=api_version, kind=kind)

    def version(self) -> dict[str, Any]:
        from kubernetes import client

        with translate("get", "/version", server=self.server):
            info = client.VersionApi(self.api_client).get_code()
        return {"git_version": info.git_version, "platform": info.platform,
                "major": info.major, "minor": info.minor}

    # ------------------------------------------------------------------ objects
    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> KubeObject | None:
        res = self.resource(api_version, kind)
        try:
            with translate("get", f"{kind}/{name}", namespace, self.server):
                obj = self.dynamic.get(res, name=name, namespace=namespace if res.namespaced else None)
        except NotFound:
            return None
        return obj.to_dict()

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None) -> list[KubeObject]:
        res = self.resource(api_version, kind)
        with translate("list", kind, namespace, self.server):
            out = self.dynamic.get(res, namespace=namespace if res.namespaced else None,
                                   label_selector=label_selector)
        return out.to_dict().get("items", [])

    def apply(self, obj: KubeObject, *, field_manager: str = FIELD_MANAGER, force: bool = False,
              dry_run: bool = False) -> KubeObject:
        api_version, kind = obj["apiVersion"], obj["kind"]
        meta = obj.get("metadata", {})
        res = self.resource(api_version, kind)
        ns = meta.get("namespace") if res.namespaced else None
        kwargs: dict[str, Any] = {"field_manager": field_manager}
        if dry_run:
            kwargs["dry_run"] = "All"
        with translate("apply", f"{kind}/{meta.get('name')}", ns, self.server):
            out = self.dynamic.server_side_apply(res, body=obj, name=meta["name"], namespace=ns,
                                                 force_conflicts=force, **kwargs)
        return out.to_dict()

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None,
               *, propagation: str = "Background") -> bool:
        """Delete one object; False when it was already gone."""
        res = self.resource(api_version, kind)
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation}
        try:
            with translate("delete", f"{kind}/{name}", namespace, self.server):
                self.dynamic.delete(res, name=name, namespace=namespace if res.namespaced else None, body=body)
        except NotFound:
            return False
        return True

    def crd_established(self, name: str) -> bool:
        crd = self.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", name)
        if not crd:
            return False
        conds = (crd.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Established" and c.get("status") == "True" for c in conds) or not conds
