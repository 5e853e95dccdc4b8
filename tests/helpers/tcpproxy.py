"""A loopback TCP forwarder that a test can cut, to play a network partition between hbwrap and its database.

    with TcpProxy("127.0.0.1", 5432) as proxy:
        url = proxy.url("postgresql://postgres@127.0.0.1:5432/test")   # same URL, through the proxy
        ...
        proxy.cut("blackhole")   # connections stay up, nothing is forwarded any more (a hung peer)
        proxy.cut("refuse")      # every connection reset, new ones refused (a host that is gone)
        proxy.restore()          # forwarding again (new connections; reset ones stay reset)

One thread, one selector; cut() and restore() are carried out by that thread and return once done.
"""
from __future__ import annotations

import queue
import selectors
import socket
import struct
import threading
from urllib.parse import urlsplit, urlunsplit


class TcpProxy:
    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.mode = "open"
        self.accepted = 0
        self._sel = selectors.DefaultSelector()
        self._peer: dict[socket.socket, socket.socket | None] = {}  # client -> upstream (None: black-holed)
        self._orders: queue.Queue = queue.Queue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._listener = None
        self.port = self._listen(0)
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="tcpproxy", daemon=True)
        self._thread.start()

    def url(self, url: str) -> str:
        """`url` with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        user = parts.netloc.rpartition("@")[0]
        netloc = (user + "@" if user else "") + f"127.0.0.1:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def cut(self, how: str = "refuse") -> None:
        assert how in ("refuse", "blackhole"), how
        self._order(how)

    def restore(self) -> None:
        self._order("open")

    def close(self) -> None:
        self._order("close")
        self._thread.join(5)

    def __enter__(self) -> "TcpProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the proxy's thread ---------------------------------------------------------------------------
    def _order(self, what: str) -> None:
        done = threading.Event()
        self._orders.put((what, done))
        self._wake_w.send(b"x")
        if not done.wait(5):
            raise AssertionError(f"tcpproxy did not carry out {what!r} within 5 s")

    def _listen(self, port: int) -> int:
        lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", port))
        lst.listen(64)
        self._listener = lst
        self._sel.register(lst, selectors.EVENT_READ, "accept")
        return lst.getsockname()[1]

    def _loop(self) -> None:
        while not self._stop:
            for key, _ in self._sel.select(1.0):
                if key.data == "wake":
                    self._wake_r.recv(4096)
                    self._carry_out_orders()
                elif key.data == "accept":
                    self._accept()
                else:
                    self._pump(key.fileobj, key.data)
        for sock in list(self._peer):
            self._drop(sock, reset=False)
        self._sel.close()

    def _carry_out_orders(self) -> None:
        while True:
            try:
                what, done = self._orders.get_nowait()
            except queue.Empty:
                return
            if what in ("refuse", "close"):
                for client in list(self._peer):
                    self._drop(client, reset=True)
                if self._listener is not None:
                    self._sel.unregister(self._listener)
                    self._listener.close()
                    self._listener = None
            if what == "open" and self._listener is None:
                self._listen(self.port)
            self._stop = what == "close"
            self.mode = what if what != "close" else "closed"
            done.set()

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        self.accepted += 1
        upstream = None
        if self.mode == "open":
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                return
            self._sel.register(upstream, selectors.EVENT_READ, client)
        self._peer[client] = upstream
        self._sel.register(client, selectors.EVENT_READ, upstream)

    def _pump(self, sock: socket.socket, other: socket.socket | None) -> None:
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._drop(sock if sock in self._peer else other, reset=False)
            return
        if self.mode == "open" and other is not None:
            try:
                other.sendall(data)
            except OSError:
                self._drop(sock if sock in self._peer else other, reset=False)
        # black-holed: what arrives is swallowed, nothing is answered

    def _drop(self, client: socket.socket | None, reset: bool) -> None:
        if client is None or client not in self._peer:
            return
        upstream = self._peer.pop(client)
        for sock in (client, upstream):
            if sock is None:
                continue
            try:
                self._sel.unregister(sock)
            except (KeyError, ValueError):
                pass
            if reset:  # RST instead of FIN: the peer's next read or write fails at once
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
