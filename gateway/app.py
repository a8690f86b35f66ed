"""Builds the Tornado application and owns the start and stop order.

Start: preflight checks -> bind the public port -> serve -> start the Next.js child.
Binding before the child starts means "port in use" fails in a second, and the gateway answers
503 + Retry-After while Next.js boots instead of refusing connections.
Stop (SIGTERM/SIGINT): stop accepting -> close client connections -> stop the child (SIGTERM,
grace, SIGKILL) -> exit 0. A second signal skips the grace.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import time

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application

from gateway import nextjs
from gateway.config import GatewayConfig
from gateway.errors import StartupError
from gateway.proxy.handler import ProxyHandler
from gateway.proxy.upstream import UpstreamConnector
from gateway.status import HealthHandler, ReadyHandler, ReservedNotFoundHandler
from gateway.supervisor import ChildSupervisor

log = logging.getLogger("gateway")


def make_app(cfg: GatewayConfig, supervisor: ChildSupervisor, started: float) -> Application:
    """The route table: the gateway's own paths first, everything else to Next.js."""
    return Application(
        [
            (r"/_gateway/health", HealthHandler, {"started": started}),
            (r"/_gateway/ready", ReadyHandler, {"supervisor": supervisor}),
            (r"/_gateway/.*", ReservedNotFoundHandler),
            (
                r".*",
                ProxyHandler,
                {
                    "upstream": supervisor,
                    "connector": UpstreamConnector(),
                    "max_body_size": cfg.server.max_body_size,
                },
            ),
        ],
        compress_response=False,  # bodies pass through as Next encoded them
        xsrf_cookies=False,
    )


def bind_public(host: str, port: int) -> list[socket.socket]:
    """Bind the public port or raise a one-line StartupError."""
    where = f"{host or '*'}:{port}"
    try:
        return bind_sockets(port, host or None, backlog=1024)
    except socket.gaierror as e:
        raise StartupError(f"cannot bind {where}: unknown host ({e.strerror})") from None
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise StartupError(
                f"port {port} on {host or 'all interfaces'} is already in use "
                "(another gateway or `next start`?): stop it or choose --port / GATEWAY_PORT"
            ) from None
        if e.errno == errno.EACCES:
            raise StartupError(
                f"permission denied binding {where} (ports < 1024 need privileges)"
            ) from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise StartupError(f"cannot bind {where}: no such address on this machine") from None
        raise StartupError(f"cannot bind {where}: {e.strerror or e}") from None


class Gateway:
    """One gateway process: the public listener plus the supervised Next.js child."""

    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self._stop = asyncio.Event()
        self._signals = 0
        self.supervisor: ChildSupervisor | None = None

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT; returns the process exit status."""
        started = time.monotonic()
        nextjs.preflight(self.cfg)
        sockets = bind_public(self.cfg.server.host, self.cfg.server.port)
        port = sockets[0].getsockname()[1]
        supervisor = self.supervisor = ChildSupervisor(nextjs.child_spec(self.cfg, port))
        server = HTTPServer(
            make_app(self.cfg, supervisor, started),
            idle_connection_timeout=self.cfg.server.idle_connection_timeout,
            max_body_size=self.cfg.server.max_body_size,
            xheaders=False,  # the proxy computes X-Forwarded-* from what it sees itself
        )
        server.add_sockets(sockets)
        self._install_signal_handlers()
        mode = "next dev" if self.cfg.next.dev else "next start"
        log.info(
            "listening on http://%s:%d (%s from %s)",
            self.cfg.server.host or "*",
            port,
            mode,
            self.cfg.next.dir,
        )
        supervisor.start()
        await self._stop.wait()
        log.info("shutting down")
        server.stop()
        await supervisor.stop()
        try:
            await asyncio.wait_for(server.close_all_connections(), timeout=5)
        except TimeoutError:
            log.warning("some client connections did not close within 5 s")
        log.info("stopped")
        return 0

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("received %s: stopping (again to skip the grace period)", sig.name)
            self._stop.set()
        elif self.supervisor is not None:
            log.warning("received %s again: killing the child now", sig.name)
            asyncio.get_running_loop().create_task(self.supervisor.kill_now())
