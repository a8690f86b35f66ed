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
import resource
import secrets
import signal
import socket
import time

from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream
from tornado.netutil import bind_sockets
from tornado.routing import PathMatches, Rule
from tornado.web import Application

from gateway import nextjs
from gateway.config import GatewayConfig
from gateway.errors import StartupError
from gateway.observability import log_handler_request
from gateway.proxy.handler import ProxyService, ProxySettings
from gateway.proxy.headers import ForwardingPolicy
from gateway.proxy.static import StaticAssets
from gateway.proxy.upstream import NoDelayStream, UpstreamPool
from gateway.proxy.websocket import WebSocketPassthrough, WebSocketUpgrade
from gateway.realtime.api import ApiHandler, ServerApi
from gateway.realtime.auth import TokenVerifier, VerifierSettings
from gateway.realtime.codes import SHUTDOWN
from gateway.realtime.memory import MemoryBroker, MemoryPresence
from gateway.realtime.node import Node
from gateway.realtime.transport import RealtimeWebSocket
from gateway.status import HealthHandler, ReadyHandler, ReservedNotFoundHandler
from gateway.supervisor import ChildState, ChildSupervisor

log = logging.getLogger("gateway")


def make_proxy(cfg: GatewayConfig, supervisor: ChildSupervisor, port: int) -> ProxySettings:
    """The proxy's shared state; the pool and the static set follow the child's restarts."""
    pcfg = cfg.proxy
    idle_timeout = min(pcfg.pool_idle_timeout, 4.0) if cfg.next.dev else pcfg.pool_idle_timeout
    pool = UpstreamPool(pcfg.connect_timeout, pcfg.pool_max_idle, idle_timeout)
    static = None
    if cfg.static.enabled and not cfg.next.dev:  # `next dev` rewrites its assets constantly
        static = StaticAssets(
            cfg.next.dir, cfg.static.max_file_size, cfg.static.max_total_size, cfg.static.compress
        )
    settings = ProxySettings(
        upstream=supervisor,
        pool=pool,
        forwarding=ForwardingPolicy(pcfg.trusted_proxies),
        static=static,
        max_body_size=cfg.server.max_body_size,
        first_byte_timeout=pcfg.first_byte_timeout,
        idle_timeout=pcfg.idle_timeout,
        public_port=port,
    )

    background: set[asyncio.Task[None]] = set()

    def on_child_state(state: ChildState) -> None:
        if state is not ChildState.RUNNING:
            pool.clear()  # idle connections to a child that is gone are dead
        elif static is not None:  # a restart may follow a new build
            task = asyncio.get_running_loop().create_task(static.reload_if_changed())
            background.add(task)
            task.add_done_callback(background.discard)

    supervisor.add_listener(on_child_state)
    return settings


def make_node(cfg: GatewayConfig) -> Node:
    """The realtime hub and its engine."""
    a = cfg.auth
    verifier = TokenVerifier(
        VerifierSettings(
            secret=a.secret,
            algorithms=tuple(a.algorithms),
            public_key=a.public_key,
            jwks_url=a.jwks_url,
            audience=a.audience,
            issuer=a.issuer,
            require_exp=a.require_exp,
            leeway=a.leeway,
        )
    )
    return Node(cfg.realtime, verifier, MemoryBroker(), MemoryPresence(), a.allow_anonymous)


def make_app(
    cfg: GatewayConfig, supervisor: ChildSupervisor, node: Node, started: float, port: int
) -> Application:
    """The route table: the gateway's own paths first, everything else to Next.js."""
    proxy = make_proxy(cfg, supervisor, port)

    def details() -> dict[str, object]:
        out: dict[str, object] = {"pool": proxy.pool.snapshot()}
        if proxy.static is not None:
            out["static"] = proxy.static.snapshot()
        return out

    passthrough = {
        "upstream": supervisor,
        "forwarding": proxy.forwarding,
        "connect_timeout": cfg.proxy.connect_timeout,
    }
    return Application(
        [
            (r"/_gateway/health", HealthHandler, {"started": started}),
            (r"/_gateway/ready", ReadyHandler, {"supervisor": supervisor, "details": details}),
            (
                r"/_gateway/api/([a-z_]+)",
                ApiHandler,
                {
                    "api": ServerApi(node),
                    "key": cfg.api.key,
                    "allowed_networks": cfg.api.allowed_networks,
                },
            ),
            (r"/_gateway/.*", ReservedNotFoundHandler),
            (
                r"/connection/websocket",
                RealtimeWebSocket,
                {"node": node, "allowed_origins": cfg.realtime.allowed_origins},
            ),
            Rule(WebSocketUpgrade(), WebSocketPassthrough, passthrough),
            Rule(PathMatches(r".*"), ProxyService(proxy)),
        ],
        compress_response=False,  # bodies pass through as Next encoded them
        xsrf_cookies=False,
        log_function=log_handler_request,  # tokens in query strings are redacted
    )


def ensure_secrets(cfg: GatewayConfig) -> None:
    """Without WS_SECRET / GATEWAY_API_KEY, make random ones for this run and hand them to the
    child, so `make run` works out of the box. Tokens then do not survive a restart."""
    if not cfg.auth.secret:
        cfg.auth.secret = secrets.token_urlsafe(32)
        log.warning("WS_SECRET is not set: using a random secret for this run")
    if not cfg.api.key:
        cfg.api.key = secrets.token_urlsafe(32)
        log.info("GATEWAY_API_KEY is not set: using a random key for this run (given to Next.js)")


def raise_fd_limit() -> None:
    """Every WebSocket is a file descriptor: lift the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


class GatewayHTTPServer(HTTPServer):
    """Tornado's HTTP server with TCP_NODELAY set once per client connection (see
    :class:`NoDelayStream`: Tornado would toggle it twice per response)."""

    def handle_stream(self, stream: IOStream, address: tuple[str, int]) -> None:
        try:
            stream.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # a Unix socket, or already closed
        else:
            stream.__class__ = NoDelayStream  # same object, one method overridden
        super().handle_stream(stream, address)


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
        self.node: Node | None = None

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT; returns the process exit status."""
        started = time.monotonic()
        nextjs.preflight(self.cfg)
        raise_fd_limit()
        sockets = bind_public(self.cfg.server.host, self.cfg.server.port)
        port = sockets[0].getsockname()[1]
        ensure_secrets(self.cfg)
        supervisor = self.supervisor = ChildSupervisor(nextjs.child_spec(self.cfg, port))
        node = self.node = make_node(self.cfg)
        node.start()
        server = GatewayHTTPServer(
            make_app(self.cfg, supervisor, node, started, port),
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
        node.disconnect_all(SHUTDOWN)
        await node.close()
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
