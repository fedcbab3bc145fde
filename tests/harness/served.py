"""The one way the harness serves HTTP on 127.0.0.1: a threaded server bound to a free port."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class Served:
    """Mixin: ``_serve(handler_base)`` starts a server whose handler sees ``owner`` (this object)."""

    server: ThreadingHTTPServer | None = None

    def _serve(self, handler_base: type[BaseHTTPRequestHandler]) -> None:
        handler = type(f"{type(self).__name__}Handler", (handler_base,), {"owner": self})
        self.server = _Server(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def base_url(self) -> str:
        assert self.server is not None, "not started"
        return f"http://127.0.0.1:{self.server.server_address[1]}"
