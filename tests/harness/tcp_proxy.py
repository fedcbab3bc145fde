"""A TCP proxy on 127.0.0.1 in front of a server, able to lose exactly one reply.

``drop_reply_to(marker)`` arms it: the next request containing ``marker`` (bytes of
a RESP command, e.g. ``b"XREADGROUP"`` or an argument only that call sends) is
forwarded, the server runs it, and its reply is thrown away while the client's
connection is closed. That is a lost reply: the effect happened, the caller sees a
connection error. ``dropped`` is set when it has happened, so tests wait on it
instead of sleeping.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._marker: bytes | None = None
        self.dropped = threading.Event()
        self._socks: list[socket.socket] = []
        self._closed = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> TcpProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def drop_reply_to(self, marker: bytes) -> None:
        """Lose the reply to the next request that contains ``marker`` (once)."""
        with self._lock:
            self._marker = marker
            self.dropped.clear()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks += [client, server]
            state = {"drop": False}
            threading.Thread(target=self._up, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, state), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, state: dict) -> None:
        """Client -> server: forward, arming the drop when the marked request passes."""
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                data = b""
            if not data:
                with contextlib.suppress(OSError):
                    server.shutdown(socket.SHUT_WR)
                return
            with self._lock:
                if self._marker is not None and self._marker in data:
                    self._marker = None
                    state["drop"] = True
            try:
                server.sendall(data)
            except OSError:
                return

    def _down(self, server: socket.socket, client: socket.socket, state: dict) -> None:
        """Server -> client: forward, or swallow the marked reply and cut the client off."""
        while True:
            try:
                data = server.recv(65536)
            except OSError:
                data = b""
            if not data or state["drop"]:
                if data:
                    self.dropped.set()  # before the client can see the cut
                for s in (client, server):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)
                    with contextlib.suppress(OSError):
                        s.close()
                return
            try:
                client.sendall(data)
            except OSError:
                return
