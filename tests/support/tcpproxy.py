"""A TCP forwarder between the gateway and a server, that can turn new connections away while
the ones already open keep working (a server that refuses one process and not another)."""

from __future__ import annotations

import socket
import threading

from support.procs import free_port


class TcpForwarder:
    """Listens on a free port of 127.0.0.1 and forwards each connection to ``target_port``.

    With ``refuse_new`` set, a new connection is closed at once (its peer reads EOF);
    connections already forwarded are left alone. :meth:`cut` closes them all,
    :meth:`hold_replies` stalls them. Use as a context manager.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.refuse_new = False
        self.refused = 0
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self._held: set[socket.socket] = set()  # server sides whose replies are held back
        self._held_prefix = b""
        self._flowing = threading.Event()
        self._flowing.set()
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> TcpForwarder:
        self._acceptor.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refuse_new:
                self.refused += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if source in self._held and data.startswith(self._held_prefix):
                    self._flowing.wait()
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def hold_replies(self, prefix: bytes = b"") -> None:
        """The server's answers (those starting with ``prefix``) on the connections open now
        wait, as if it stalled: requests still reach it, and new connections work."""
        with self._lock:
            self._held = set(self._sockets[1::2])  # the upstream side of each pair
        self._held_prefix = prefix
        self._flowing.clear()

    def release_replies(self) -> None:
        self._flowing.set()
        self._held = set()

    def cut(self) -> None:
        """Close every forwarded connection at once (a network blip); new ones still pass."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()
