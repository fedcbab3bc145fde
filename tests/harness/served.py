"""The one way the harness serves HTTP on 127.0.0.1: a threaded server bound to a free port."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def server_activate(self) -> None:
        super().server_activate()
        # A client that connects and resets before the accept (a fault test, a timed-out try) would leave
        # a blocking accept() waiting forever after select() said "readable", and shutdown() with it.
        # Non-blocking, the accept fails with BlockingIOError, which serve_forever ignores.
        self.socket.setblocking(False)

    def get_request(self):  # type: ignore[no-untyped-def]
        conn, addr = self.socket.accept()
        conn.setblocking(True)  # the handlers read and write blocking, as before
        return conn, addr

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that hangs up mid-request (a timed-out try, a retry) is not an error of the
        # server's: a real API server logs nothing on stderr for it. Printing the traceback here
        # lands in the output of the CLI under test, which must never show one.
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


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


class Handler(BaseHTTPRequestHandler):
    """Base for the fakes' handlers: quiet, keep-alive, Nagle off, every verb to ``_handle``."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # otherwise ~20 requests per second on keep-alive connections

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        raise NotImplementedError

    def read_body(self) -> tuple[bytes, bool]:
        """The request body and whether it came chunked (git sends bodies over 1 MiB that way)."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(data), True
                data += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return (self.rfile.read(n) if n else b""), False
