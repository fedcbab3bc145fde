"""Kubernetes access: one client per caller, typed errors at the boundary.

Everything here goes through the official client's kubeconfig loader (which
merges a ``KUBECONFIG`` list as kubectl does) and the DynamicClient; no global
client state is touched. Every request has a timeout (connect, read), and every
server URL that reaches a message has its credentials masked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
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
    RaibidError,
    Unreachable,
    redact_url,
    redact_urls_in,
)

# A Kubernetes object as the API returns it (a dict from JSON).
KubeObject = dict[str, Any]

DEFAULT_TIMEOUT = 30.0
CONNECT_TIMEOUT = 5.0


class NamespaceTerminating(ClusterError):
    """An object was sent to a namespace that is being deleted."""


class ImmutableField(InvalidError):
    """The API server refused to change a field that cannot change after creation."""


class RequestTimeout(Unreachable):
    """The API server accepted the connection but did not answer in time."""


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "raibid"


def kubeconfig_files(paths: str) -> list[str]:
    """The existing files of a ``KUBECONFIG``-style list, in order (kubectl merges them all)."""
    out = []
    for p in paths.split(os.pathsep):
        p = os.path.expanduser(p)
        if p and os.path.exists(p) and p not in out:
            out.append(p)
    return out


def first_current_context(files: list[str]) -> str | None:
    """The current-context kubectl uses for a merged ``KUBECONFIG`` list: the first file that sets
    a non-empty one wins. (The official client's merger lets the last file win, even with "".)
    None when no file sets one, or a file cannot be read (loading it then reports the problem)."""
    from raibid.yamlio import load

    for f in files:
        try:
            data = load(Path(f).read_text(encoding="utf-8"), max_nodes=100_000)
        except Exception:  # a broken file: load_kube_config names the problem
            return None
        current = data.get("current-context") if isinstance(data, dict) else None
        if isinstance(current, str) and current:
            return current
    return None


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


def _causes(body: Any) -> list[dict]:
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    try:
        data = json.loads(body) if isinstance(body, str) else body
    except ValueError:
        return []
    details = data.get("details") if isinstance(data, dict) else None
    causes = details.get("causes") if isinstance(details, dict) else None
    return [c for c in causes or [] if isinstance(c, dict)]


def _looks_like_html(text: str) -> bool:
    head = text.lstrip()[:200].lower()
    return head.startswith(("<!doctype", "<html", "<?xml", "<head", "<body")) or "<html" in head


class NotAnAPIServer(Exception):
    """Raised from a response that is not JSON: whatever answered is not a Kubernetes API server."""

    def __init__(self, status: int, content_type: str) -> None:
        super().__init__(f"HTTP {status}, Content-Type {content_type or 'none'}")
        self.status, self.content_type = status, content_type


_IMMUTABLE_MARKERS = ("field is immutable", "is immutable", "can not be less than previous value",
                      "Forbidden: updates to", "may not be changed")


@contextlib.contextmanager
def translate(verb: str, what: str, namespace: str | None = None, server: str | None = None,
              timeout: float | None = None) -> Iterator[None]:
    """Map kubernetes/urllib3 exceptions to raibid's typed errors.

    ``verb`` and ``what`` name the request (``apply``, ``Deployment/redis``),
    so a 403 says exactly which permission is missing. ``server`` is masked here.
    """
    from kubernetes.client.exceptions import ApiException
    from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError
    from urllib3.exceptions import HTTPError as Urllib3Error
    from urllib3.exceptions import NewConnectionError
    from urllib3.exceptions import TimeoutError as Urllib3Timeout

    where = f" in namespace {namespace}" if namespace else ""
    at = _at(server)
    try:
        yield
    except RaibidError:
        raise
    except ResourceNotFoundError as e:
        raise NotFound(f"the cluster does not serve {what}: {e}",
                       hint="is the CRD installed? `raibid doctor` checks the CRDs") from None
    except NotAnAPIServer as e:
        raise Unreachable(f"{verb} {what}: the server{at} is not a Kubernetes API server (it answered {e})",
                          hint="check the kubeconfig `server:` (is a web server or proxy answering there?)") from None
    except (ApiException, DynamicApiError) as e:
        status = int(getattr(e, "status", 0) or 0)
        body = getattr(e, "body", None)
        msg, reason = status_body(body) if body else (getattr(e, "reason", None) or str(e), None)
        if isinstance(body, (str, bytes, bytearray)) and _looks_like_html(
                body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else body):
            raise Unreachable(f"{verb} {what}: the server{at} answered HTTP {status} with an HTML page; "
                              "it is not a Kubernetes API server",
                              hint="check the kubeconfig `server:` (is a web server or proxy answering there?)") \
                from None
        causes = _causes(body) if body else []
        if status == 403 and ("being terminated" in msg
                              or any(c.get("reason") == "NamespaceTerminating" for c in causes)):
            raise NamespaceTerminating(
                f"{verb} {what}{where}: the namespace is being deleted (Terminating): {msg}",
                hint=f"wait until `kubectl get namespace {namespace or ''}` shows it gone, then run again "
                     "(`raibid cluster down` waits for it unless --no-wait)") from None
        if status == 401:  # the credentials were not accepted: expired or wrong, not a permission
            raise AuthError(f"{verb} {what}{where}: unauthorized (401): {msg}",
                            hint="the API server did not accept the kubeconfig user's credentials (an expired "
                                 "or wrong token or certificate); on k3s copy /etc/rancher/k3s/k3s.yaml again") \
                from None
        if status == 403:
            raise AuthError(f"{verb} {what}{where}: forbidden (403): {msg}",
                            hint="check the kubeconfig user and its RBAC permissions") from None
        if status == 404:
            raise NotFound(f"{verb} {what}{where}: not found: {msg}") from None
        if status == 409:
            if reason == "AlreadyExists":
                raise AlreadyExists(f"{verb} {what}{where}: {msg}") from None
            raise ConflictError(f"{verb} {what}{where}: conflict: {msg}",
                                hint="re-run with --force-conflicts to take ownership of these fields") from None
        if status == 422:
            if any(m in msg for m in _IMMUTABLE_MARKERS):
                raise ImmutableField(f"{verb} {what}{where}: a field that cannot change after creation was "
                                     f"changed: {msg}") from None
            raise InvalidError(f"{verb} {what}{where}: rejected by the API server: {msg}") from None
        if status == 0:
            raise Unreachable(f"{verb} {what}: cannot reach the API server{at}: {_scrub(msg, server)}") from None
        raise ClusterError(f"{verb} {what}{where}: API server error {status}: {_scrub(msg, server)}") from None
    except Urllib3Error as e:
        cause = getattr(e, "reason", None) or e
        # (NewConnectionError is a ConnectTimeoutError in urllib3 2 for compatibility: a refusal, not a hang.)
        if any(isinstance(x, Urllib3Timeout) and not isinstance(x, NewConnectionError) for x in (e, cause)):
            limit = f" within {timeout:g}s" if timeout else ""
            raise RequestTimeout(f"{verb} {what}: the API server{at} did not answer{limit}",
                                 hint="is k3s overloaded or hung? the limit is cluster.request_timeout") from None
        raise Unreachable(f"{verb} {what}: cannot reach the API server{at}: {_scrub(str(cause), server)}",
                          hint="is k3s running? check --kubeconfig and --context") from None
    except (TimeoutError, ConnectionError, socket.gaierror) as e:
        raise Unreachable(f"{verb} {what}: cannot reach the API server{at}: {_scrub(str(e), server)}",
                          hint="is k3s running? check --kubeconfig and --context") from None
    except OSError as e:  # a local problem (a file, a permission), not the network
        raise ClusterError(f"{verb} {what}: local error: {_scrub(str(e), server)}") from None
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
        if isinstance(e, ValueError) and "should start with https://" in str(e):
            # The DynamicClient's rewording of a dropped connection (or a non-JSON /version) on plain http.
            raise Unreachable(f"{verb} {what}: the API server{at} dropped the connection or did not answer "
                              "/version with JSON", hint="is k3s running? check --kubeconfig and --context") from None
        # The client could not make sense of a 2xx answer: JSON of the wrong shape.
        raise ClusterError(f"{verb} {what}: the API server{at} answered something that is not the expected "
                           f"Kubernetes object ({type(e).__name__}: {_scrub(str(e), server)[:200]})",
                           hint="is this a Kubernetes API server? `raibid doctor` checks it") from None


def _at(server: str | None) -> str:
    return f" at {redact_url(server)}" if server else ""


def _scrub(text: str, server: str | None) -> str:
    """Remove a raw server URL (with credentials) that urllib3 or the client put into its own message."""
    if server and server in text:
        text = text.replace(server, redact_url(server))
    return redact_urls_in(text)


@contextlib.contextmanager
def _client_log_errors() -> Iterator[list[str]]:
    """Collect what the kubernetes client reports through ``logging.error`` instead of printing it.

    The client logs some failures (an exec credential plugin that is missing or
    fails, an unreadable discovery cache) rather than raising them; without a
    handler, logging would print a stray ``ERROR:root:`` line.
    """
    errors: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                errors.append(record.getMessage())

    handler = _Collect()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield errors
    finally:
        root.removeHandler(handler)


def _check_server(server: str, where: str) -> None:
    """A kubeconfig ``server:`` must be an http(s) URL with a host and a numeric port."""
    from urllib.parse import urlsplit

    shown = redact_url(server)
    try:
        parts = urlsplit(server)
        port = parts.port
    except ValueError as e:
        raise ConfigError(f"{where}: server {shown!r} is not a valid URL: {e}",
                          hint="it looks like https://127.0.0.1:6443") from None
    del port
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in server.strip():
        raise ConfigError(f"{where}: server {shown!r} is not an http(s) URL",
                          hint="it looks like https://127.0.0.1:6443") from None


def _check_tls_files(cfg: Any, where: str) -> None:
    """Refuse a CA or client certificate that cannot be loaded (a usage error, not an unreachable server)."""
    import ssl

    if cfg.ssl_ca_cert:
        try:
            ssl.create_default_context(cafile=cfg.ssl_ca_cert)
        except (ssl.SSLError, OSError, ValueError) as e:
            raise ConfigError(f"{where}: certificate-authority(-data) is not a usable PEM certificate: {e}",
                              hint="copy it again from the k3s server (/etc/rancher/k3s/k3s.yaml)") from None
    if cfg.cert_file:
        try:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file or None)
        except (ssl.SSLError, OSError, ValueError) as e:
            raise ConfigError(f"{where}: client-certificate/client-key cannot be loaded: {e}",
                              hint="copy them again from the k3s server (/etc/rancher/k3s/k3s.yaml)") from None


_TIMED_CLIENT: Any = None


def _timed_api_client(configuration: Any, timeout: float) -> Any:
    """An ApiClient whose every request has a (connect, read) timeout and is checked to be JSON."""
    global _TIMED_CLIENT
    if _TIMED_CLIENT is None:
        from kubernetes.client import ApiClient

        class TimedApiClient(ApiClient):
            request_timeout: tuple[float, float] = (CONNECT_TIMEOUT, DEFAULT_TIMEOUT)

            def call_api(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
                if kwargs.get("_request_timeout") is None:
                    kwargs["_request_timeout"] = self.request_timeout
                response = super().call_api(method, url, *args, **kwargs)
                ctype = response.getheader("Content-Type") or ""
                if 200 <= response.status <= 299 and "html" in ctype.lower():
                    raise NotAnAPIServer(response.status, ctype)
                return response

        _TIMED_CLIENT = TimedApiClient
    client = _TIMED_CLIENT(configuration=configuration)
    client.request_timeout = (min(CONNECT_TIMEOUT, timeout), timeout)
    return client


class Kube:
    """A thin, typed facade over one ApiClient and its DynamicClient."""

    def __init__(self, api_client: Any, *, cache_dir: Path | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.api_client = api_client
        self._host: str = api_client.configuration.host
        self.server: str = redact_url(self._host)  # for messages: never with credentials
        self.timeout = timeout
        self._cache_dir = cache_dir or _cache_dir()
        self._dyn: Any = None

    @classmethod
    def from_kubeconfig(cls, path: str, context: str | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> Kube:
        """A client for ``path``: one kubeconfig, or a ``KUBECONFIG`` list merged as kubectl merges it."""
        from kubernetes import config as kconfig
        from kubernetes.client import Configuration
        from kubernetes.config.config_exception import ConfigException

        files = kubeconfig_files(path)
        if not files:
            raise ConfigError(f"kubeconfig not found: {path}",
                              hint="on k3s: export KUBECONFIG=/etc/rancher/k3s/k3s.yaml, or pass --kubeconfig")
        where = f"kubeconfig {os.pathsep.join(files)}"
        if context is None and len(files) > 1:
            context = first_current_context(files)
        cfg = Configuration()
        # Fail fast when the API server is down: no urllib3 retry storm. Set before
        # the client exists, because its connection pool reads it once.
        cfg.retries = 0
        try:
            with _client_log_errors() as errors:
                kconfig.load_kube_config(config_file=os.pathsep.join(files), context=context,
                                         client_configuration=cfg, persist_config=False)
        except ConfigException as e:
            raise ConfigError(f"{where}: {redact_urls_in(str(e))}") from None
        except Exception as e:  # yaml errors, bad base64 and friends from a broken kubeconfig
            raise ConfigError(f"{where} is not usable: {redact_urls_in(str(e))}") from None
        if errors:
            raise ConfigError(f"{where}: the user's exec credential plugin failed: {redact_urls_in(errors[0])}",
                              hint="install the command named in the kubeconfig's users[].user.exec.command, "
                                   "or put it on PATH") from None
        _check_server(cfg.host, where)
        _check_tls_files(cfg, where)
        return cls(_timed_api_client(cfg, timeout), timeout=timeout)

    def _translate(self, verb: str, what: str, namespace: str | None = None) -> contextlib.AbstractContextManager:
        return translate(verb, what, namespace, self._host, self.timeout)

    # ------------------------------------------------------------------ discovery
    @property
    def dynamic(self) -> Any:
        if self._dyn is None:
            from kubernetes.dynamic import DynamicClient

            digest = hashlib.sha256(self._host.encode()).hexdigest()[:16]
            try:
                self._cache_dir.mkdir(parents=True, exist_ok=True)
                cache_dir = self._cache_dir
                if not os.access(cache_dir, os.W_OK):
                    raise PermissionError(f"{cache_dir} is not writable")
            except OSError:
                # A local problem, not the server's: keep this run's discovery in a private temp folder.
                import tempfile

                cache_dir = Path(tempfile.mkdtemp(prefix="raibid-discovery-"))
            cache = cache_dir / f"discovery-{digest}.json"
            with self._translate("discover", "API resources"), _client_log_errors():
                self._dyn = DynamicClient(self.api_client, cache_file=str(cache))
        return self._dyn

    def resource(self, api_version: str, kind: str) -> Any:
        with self._translate("discover", f"{kind} ({api_version})"):
            return self.dynamic.resources.get(api_version=api_version, kind=kind)

    def serves(self, api_version: str, kind: str, *, refresh: bool = False) -> bool:
        """Does the API server serve this kind (now)? ``refresh`` re-reads discovery first."""
        if refresh and self._dyn is not None:
            with self._translate("discover", "API resources"), _client_log_errors():
                self._dyn.resources.invalidate_cache()
        try:
            self.resource(api_version, kind)
        except NotFound:
            return False
        return True

    def version(self) -> dict[str, Any]:
        from kubernetes import client

        with self._translate("get", "/version"):
            info = client.VersionApi(self.api_client).get_code()
            out = {"git_version": info.git_version, "platform": info.platform,
                   "major": info.major, "minor": info.minor}
        if not isinstance(out["git_version"], str) or not out["git_version"]:
            raise ClusterError(f"get /version: the server at {self.server} answered without a gitVersion",
                               hint="is this a Kubernetes API server? check the kubeconfig `server:`")
        return out

    # ------------------------------------------------------------------ objects
    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> KubeObject | None:
        """The object, or None when it does not exist (or its kind is not served: no CRD, no object)."""
        try:
            res = self.resource(api_version, kind)
            with self._translate("get", f"{kind}/{name}", namespace):
                obj = self.dynamic.get(res, name=name, namespace=namespace if res.namespaced else None)
                out = obj.to_dict()
        except NotFound:
            return None
        return self._checked(out, api_version, kind, f"get {kind}/{name}")

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None) -> list[KubeObject]:
        """The items, each with ``apiVersion`` and ``kind`` set (a real server omits them in lists)."""
        res = self.resource(api_version, kind)
        with self._translate("list", kind, namespace):
            out = self.dynamic.get(res, namespace=namespace if res.namespaced else None,
                                   label_selector=label_selector).to_dict()
        items = out.get("items") if isinstance(out, dict) else None
        if not isinstance(items, list):
            raise ClusterError(f"list {kind}: the API server at {self.server} answered without an items list",
                               hint="is this a Kubernetes API server? `raibid doctor` checks it")
        return [self._checked(i, api_version, kind, f"list {kind}") for i in items]

    def _checked(self, obj: Any, api_version: str, kind: str, what: str) -> KubeObject:
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict) \
                or not isinstance(obj["metadata"].get("name"), str):
            raise ClusterError(f"{what}: the API server at {self.server} answered something that is not a "
                               "Kubernetes object", hint="is this a Kubernetes API server? `raibid doctor` checks it")
        obj.setdefault("apiVersion", api_version)
        obj.setdefault("kind", kind)
        return obj

    def apply(self, obj: KubeObject, *, field_manager: str = FIELD_MANAGER, force: bool = False,
              dry_run: bool = False) -> KubeObject:
        api_version, kind = obj["apiVersion"], obj["kind"]
        meta = obj.get("metadata", {})
        res = self.resource(api_version, kind)
        ns = meta.get("namespace") if res.namespaced else None
        kwargs: dict[str, Any] = {"field_manager": field_manager}
        if dry_run:
            kwargs["dry_run"] = "All"
        with self._translate("apply", f"{kind}/{meta.get('name')}", ns):
            out = self.dynamic.server_side_apply(res, body=obj, name=meta["name"], namespace=ns,
                                                 force_conflicts=force, **kwargs).to_dict()
        return self._checked(out, api_version, kind, f"apply {kind}/{meta.get('name')}")

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None,
               *, propagation: str = "Background") -> bool:
        """Delete one object; False when it was already gone."""
        res = self.resource(api_version, kind)
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation}
        try:
            with self._translate("delete", f"{kind}/{name}", namespace):
                self.dynamic.delete(res, name=name, namespace=namespace if res.namespaced else None, body=body)
        except NotFound:
            return False
        return True

    def crd_established(self, name: str) -> bool:
        crd = self.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", name)
        if not crd:
            return False
        conds = (crd.get("status") or {}).get("conditions") or []
        return any(isinstance(c, dict) and c.get("type") == "Established" and c.get("status") == "True"
                   for c in conds) or not conds
