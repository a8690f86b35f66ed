"""What every request handler of the gateway's own routes shares."""

from __future__ import annotations

from tornado.web import RequestHandler


class GatewayHandler(RequestHandler):
    """A RequestHandler that does not announce ``Server: TornadoServer/x.y``: the version of
    the server software is an attacker's shortcut to its known bugs, and proxied answers carry
    Next's headers only. Mix it in first: ``class H(GatewayHandler, WebSocketHandler)``."""

    def clear(self) -> None:
        super().clear()
        self.clear_header("Server")
