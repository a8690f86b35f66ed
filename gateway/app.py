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
import json
import logging
import os
import re
import resource
import secrets
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.httputil import (
    HTTPConnection,
    HTTPHeaders,
    HTTPMessageDelegate,
    HTTPServerConnectionDelegate,
    RequestStartLine,
    ResponseStartLine,
)
from tornado.iostream import IOStream
from tornado.netutil import bind_sockets
from tornado.routing import PathMatches, Rule
from tornado.web import Application

from gateway import nextjs
from gateway.config import GatewayConfig
from gateway.errors import StartupError
from gateway.metrics import GatewayMetrics, MetricsHandler, route_kind
from gateway.nextbuild import locate
from gateway.observability import handler_logger
from gateway.proxy.client_stream import ClientStream
from gateway.proxy.compression import CompressedCache, CompressionPolicy
from gateway.proxy.handler import ProxyService, ProxySettings
from gateway.proxy.headers import ForwardingPolicy
from gateway.proxy.microcache import MicroCache, Purge
from gateway.proxy.static import StaticAssets, StaticSources
from gateway.proxy.upstream import UpstreamPool
from gateway.proxy.websocket import DevOriginHint, WebSocketPassthrough, WebSocketUpgrade
from gateway.realtime import commands, jsonsafe
from gateway.realtime.api import ApiHandler, ApiMethod, ServerApi
from gateway.realtime.auth import TokenVerifier, VerifierSettings
from gateway.realtime.broker import Broker, PresenceManager
from gateway.realtime.codes import SHUTDOWN
from gateway.realtime.hooks import HookCaller, HttpHooks
from gateway.realtime.http_transports import (
    EmulationHandler,
    HttpStreamHandler,
    SseHandler,
    UniHttpStreamHandler,
    UniSseHandler,
)
from gateway.realtime.memory import MemoryBroker, MemoryPresence
from gateway.realtime.node import Node
from gateway.realtime.redis import RedisEngine
from gateway.realtime.transport import RealtimeWebSocket, UniWebSocket
from gateway.releases import Releases
from gateway.status import HealthHandler, ReadyHandler, ReservedNotFoundHandler
from gateway.supervisor import ChildState
from gateway.tasks import BackgroundTasks
from gateway.workers import RemoteUpstream, WorkerPool, state_message

log = logging.getLogger("gateway")


def static_sources(release_dir: str) -> StaticSources:
    """Where the static fast path reads the files of the release in ``release_dir``."""
    app = locate(release_dir)
    return StaticSources(
        static_dir=app.static_dir,
        build_id_file=app.build_id_file,
        public_dir=app.public_dir,
        authoritative=app.standalone,
    )


def compression_settings(cfg: GatewayConfig) -> dict[str, Any]:
    """The proxy's compression policy and its cache, from ``proxy.compression``."""
    c = cfg.proxy.compression
    if not c.enabled:
        return {"compression": None, "compressed": None}
    policy = CompressionPolicy(
        enabled=True,
        gzip_level=c.gzip_level,
        brotli_quality=c.brotli_level,
        min_size=c.min_size,
        types=tuple(t.lower() for t in c.types),
    )
    return {"compression": policy, "compressed": CompressedCache(c.cache_bytes)}


def micro_cache_of(cfg: GatewayConfig) -> MicroCache | None:
    """The proxy's micro-cache, from ``proxy.micro_cache`` (None: off)."""
    c = cfg.proxy.micro_cache
    if not c.enabled:
        return None
    return MicroCache(c.max_bytes, c.max_object_size, c.max_ttl)


class CachePurges:
    """The server API's ``cache_purge`` and its way to every process: where proxy/ (the
    micro-cache) and realtime/ (the API, the engine's control channels) meet.

    A purge is applied here at once, then sent to every process sharing the engine
    (``Node.control_all``; Redis: ``<prefix>:c:all``), each of which applies it on receipt;
    this process skips its own message."""

    TOPIC = "cache_purge"

    def __init__(self, cache: MicroCache | None) -> None:
        self.cache = cache
        self.origin = secrets.token_hex(8)

    def control_handlers(self) -> dict[str, Callable[[bytes], None]]:
        return {self.TOPIC: self.on_control}

    def on_control(self, payload: bytes) -> None:
        """Another process's purge."""
        if self.cache is None:
            return
        try:
            message = jsonsafe.loads(payload)
            if not isinstance(message, dict) or not isinstance(message.get("purge"), dict):
                raise ValueError("not a purge")
            if message.get("origin") == self.origin:
                return
            purged = self.cache.purge(Purge.parse(message["purge"]))
        except ValueError as e:  # JsonError is one
            log.warning("dropped a malformed cache purge: %s", e)
            return
        log.debug("cache purge from another process: %d entries", purged)

    def api_method(self, node: Node) -> ApiMethod:
        async def cache_purge(params: dict[str, Any]) -> dict[str, Any]:
            try:
                what = Purge.parse(params)
            except ValueError as e:
                raise commands.BadRequest(str(e)) from None
            if self.cache is None:
                return {"purged": 0, "processes": 0}  # the cache is off (everywhere)
            purged = self.cache.purge(what)
            message = json.dumps({"origin": self.origin, "purge": what.as_params()}).encode()
            processes = await node.control_all(self.TOPIC, message)
            return {"purged": purged, "processes": processes}

        return cache_purge


def make_proxy(
    cfg: GatewayConfig, supervisor: Any, port: int, micro_cache: MicroCache | None = None
) -> ProxySettings:
    """The proxy's shared state; the pool and the static set follow the child's restarts."""
    pcfg = cfg.proxy
    idle_timeout = min(pcfg.pool_idle_timeout, 4.0) if cfg.next.dev else pcfg.pool_idle_timeout
    pool = UpstreamPool(
        pcfg.connect_timeout,
        pcfg.pool_max_idle,
        idle_timeout,
        max_connections=pcfg.max_connections,
        queue_timeout=pcfg.queue_timeout,
    )
    static = None
    release = os.path.realpath(cfg.next.dir)
    # `next dev` rewrites its assets constantly; a standalone server.js has none to serve, so
    # there the gateway serves them even with static.enabled off.
    if not cfg.next.dev and (cfg.static.enabled or static_sources(release).authoritative):
        static = StaticAssets(
            static_sources(release),
            cfg.static.max_file_size,
            cfg.static.max_total_size,
            cfg.static.compress,
            cfg.static.keep_builds,
        )
    settings = ProxySettings(
        upstream=supervisor,
        pool=pool,
        forwarding=ForwardingPolicy(pcfg.trusted_proxies),
        static=static,
        max_body_size=cfg.server.max_body_size,
        first_byte_timeout=pcfg.first_byte_timeout,
        idle_timeout=pcfg.idle_timeout,
        body_timeout=pcfg.body_timeout,
        body_buffer=pcfg.body_buffer,
        public_port=port,
        micro_cache=micro_cache,
        **compression_settings(cfg),
    )

    background = BackgroundTasks("proxy")
    served_by: list[Any] = [None]  # the child the micro-cache's entries came from

    def on_child_state(state: ChildState) -> None:
        if state is not ChildState.RUNNING:
            pool.clear()  # idle connections to a child that is gone are dead
            return
        target = supervisor.target()
        if micro_cache is not None and target != served_by[0]:
            # Another child (a reload's new build, or a restart): what the old one rendered
            # must not outlive it by up to max_ttl.
            if served_by[0] is not None:
                dropped = micro_cache.purge(Purge(everything=True))
                log.info("new Next.js child: micro-cache purged (%d entries)", dropped)
            served_by[0] = target
        if target is not None:  # after a reload, the previous child drains faster without them
            pool.close_idle_except(target)
        if static is not None:  # a restart or a reload may bring a new build
            release = supervisor.snapshot().get("release")
            if release:
                static.set_sources(static_sources(release))
            if static.changed():  # from now on, a request for one of its files waits for it
                background.spawn(static.reload_if_changed(), "reloading static assets")

    supervisor.add_listener(on_child_state)
    return settings


def make_node(
    cfg: GatewayConfig,
    hooks: HookCaller | None = None,
    on_publish: Callable[[float], None] | None = None,
    control_handlers: dict[str, Callable[[bytes], None]] | None = None,
) -> Node:
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
    broker: Broker
    presence: PresenceManager
    if cfg.engine.kind == "redis":
        urls = cfg.engine.redis_urls or [cfg.engine.redis_url]
        engine = RedisEngine(urls, cfg.engine.prefix, cfg.engine.presence_ttl)
        broker, presence = engine, engine
    else:
        broker, presence = MemoryBroker(), MemoryPresence()
    return Node(
        cfg.realtime,
        verifier,
        broker,
        presence,
        a.allow_anonymous,
        hooks,
        on_publish,
        control_handlers,
    )


def uses_hooks(cfg: GatewayConfig) -> bool:
    rt = cfg.realtime
    namespaces = [rt.default, *rt.namespaces.values()]
    return bool(
        rt.hooks.connect
        or rt.hooks.rpc
        or rt.hooks.send
        or any(n.subscribe_hook or n.publish_hook for n in namespaces)
    )


def make_app(
    cfg: GatewayConfig,
    supervisor: Any,
    node: Node,
    started: float,
    port: int,
    draining: Callable[[], bool] = lambda: False,
    metrics: GatewayMetrics | None = None,
    purges: CachePurges | None = None,
) -> tuple[Application, ProxySettings]:
    """The route table: the gateway's own paths first, everything else to Next.js."""
    purges = purges or CachePurges(None)
    proxy = make_proxy(cfg, supervisor, port, purges.cache)
    proxy.draining = draining
    metrics = metrics or GatewayMetrics()
    metrics.watch(supervisor, node, proxy.pool)
    proxy.observer = metrics
    proxy.access_log = cfg.log.access

    def details() -> dict[str, object]:
        out: dict[str, object] = {
            "broker": node.broker.snapshot(),
            "pool": proxy.pool.snapshot(),
        }
        if cfg.server.workers > 1:
            out["worker"] = {"id": os.environ.get("GATEWAY_WORKER_ID"), "pid": os.getpid()}
        if proxy.static is not None:
            out["static"] = proxy.static.snapshot()
        if proxy.compressed is not None:
            out["compressed"] = proxy.compressed.snapshot()
        if proxy.micro_cache is not None:
            out["micro_cache"] = proxy.micro_cache.snapshot()
        return out

    passthrough = {
        "upstream": supervisor,
        "forwarding": proxy.forwarding,
        "connect_timeout": cfg.proxy.connect_timeout,
        "first_byte_timeout": cfg.proxy.first_byte_timeout,
        "dev_origins": DevOriginHint() if nextjs.checks_dev_origins(cfg) else None,
    }
    app = Application(
        [
            (r"/_gateway/health", HealthHandler, {"started": started}),
            (
                r"/_gateway/ready",
                ReadyHandler,
                {"supervisor": supervisor, "details": details, "draining": draining},
            ),
            (
                r"/_gateway/metrics",
                MetricsHandler if cfg.metrics.enabled else ReservedNotFoundHandler,
                {
                    "metrics": metrics,
                    "allowed_networks": cfg.metrics.allowed_networks,
                    "forwarding": proxy.forwarding,
                }
                if cfg.metrics.enabled
                else {},
            ),
            (
                r"/_gateway/api/([a-z_]+)",
                ApiHandler,
                {
                    "api": ServerApi(node, {CachePurges.TOPIC: purges.api_method(node)}),
                    "key": cfg.api.key,
                    "allowed_networks": cfg.api.allowed_networks,
                    "forwarding": proxy.forwarding,
                    "draining": draining,
                },
            ),
            (r"/_gateway/.*", ReservedNotFoundHandler),
            (
                r"/connection/websocket",
                RealtimeWebSocket,
                {"node": node, "allowed_origins": cfg.realtime.allowed_origins},
            ),
            *realtime_transport_routes(cfg, node),
            (r"/connection/.*", ReservedNotFoundHandler),
            Rule(WebSocketUpgrade(), WebSocketPassthrough, passthrough),
            Rule(PathMatches(r".*"), ProxyService(proxy)),
        ],
        compress_response=False,  # bodies pass through as Next encoded them
        xsrf_cookies=False,
        # One access line per request (tokens in query strings redacted), and the metrics.
        log_function=handler_logger(metrics, route_kind, proxy.forwarding)
        if cfg.log.access
        else lambda handler: metrics.response(
            route_kind(handler.request.path), handler.get_status()
        ),
    )
    return app, proxy


def realtime_transport_routes(cfg: GatewayConfig, node: Node) -> list[tuple[str, Any, Any]]:
    """The endpoints besides /connection/websocket that realtime.transports turns on."""
    t = cfg.realtime.transports
    args = {"node": node}
    routes: list[tuple[str, Any, Any]] = []
    if t.http_stream or t.sse:
        routes.append((re.escape(t.emulation_endpoint), EmulationHandler, args))
    for enabled, path, handler in (
        (t.http_stream, "/connection/http_stream", HttpStreamHandler),
        (t.sse, "/connection/sse", SseHandler),
        (t.uni_sse, "/connection/uni_sse", UniSseHandler),
        (t.uni_http_stream, "/connection/uni_http_stream", UniHttpStreamHandler),
    ):
        if enabled:
            routes.append((path, handler, args))
    if t.uni_websocket:
        routes.append(
            (
                r"/connection/uni_websocket",
                UniWebSocket,
                {"node": node, "allowed_origins": cfg.realtime.allowed_origins},
            )
        )
    return routes


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


_RESERVED: list[socket.socket] = []


def reserve_port(host: str, port: int) -> int:
    """Hold the port for the workers: bound with SO_REUSEPORT but never listening, so no
    connection is queued here, and any other program gets "address in use". Returns it."""
    sockets = bind_public(host, port, reuse_port=True)
    port = sockets[0].getsockname()[1]
    for sock in sockets:
        # bind_sockets listened; an unconnected socket of the same address that does not
        # listen keeps the reservation without taking a share of the connections.
        family = sock.family
        sock.close()
        held = socket.socket(family, socket.SOCK_STREAM)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            held.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        held.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
        _RESERVED.append(held)
    return int(port)


class FrontDoor(HTTPServerConnectionDelegate):
    """What the HTTP server hands each request to: a request for Next.js (anything outside
    ``/_gateway/`` and ``/connection/`` that is not an upgrade) goes straight to the proxy;
    the rest through the Application's routes. The router would build an HTTPServerRequest
    (its query parsed and deep-copied) and try every rule before the catch-all on every
    proxied request: 9% of the gateway's CPU per proxied request in bench/proxy.py's profile.
    The routes still list the proxy last, so both ways agree."""

    def __init__(self, app: Application, proxy: ProxySettings) -> None:
        self.app = app
        self.proxy = ProxyService(proxy)

    def start_request(
        self, server_conn: object, request_conn: HTTPConnection
    ) -> HTTPMessageDelegate:
        return _Dispatch(self, server_conn, request_conn)

    def on_close(self, server_conn: object) -> None:
        self.app.on_close(server_conn)


class _Dispatch(HTTPMessageDelegate):
    __slots__ = ("delegate", "front", "request_conn", "server_conn")

    def __init__(self, front: FrontDoor, server_conn: object, request_conn: HTTPConnection):
        self.front = front
        self.server_conn = server_conn
        self.request_conn = request_conn
        self.delegate: HTTPMessageDelegate | None = None

    def headers_received(
        self, start_line: RequestStartLine | ResponseStartLine, headers: HTTPHeaders
    ) -> Awaitable[None] | None:
        target = start_line.path if isinstance(start_line, RequestStartLine) else ""
        if target.startswith(("/_gateway/", "/connection/")) or "Upgrade" in headers:
            self.delegate = self.front.app.start_request(self.server_conn, self.request_conn)
        else:
            self.delegate = self.front.proxy.start_request(self.server_conn, self.request_conn)
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        assert self.delegate is not None
        return self.delegate.data_received(chunk)

    def finish(self) -> None:
        if self.delegate is not None:
            self.delegate.finish()

    def on_connection_close(self) -> None:
        if self.delegate is not None:
            self.delegate.on_connection_close()


class GatewayHTTPServer(HTTPServer):
    """Tornado's HTTP server with TCP_NODELAY set once per client connection (see
    :class:`NoDelayStream`: Tornado would toggle it twice per response), and a 431 for
    oversized heads (:class:`ClientStream`)."""

    def handle_stream(self, stream: IOStream, address: tuple[str, int]) -> None:
        try:
            stream.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # a Unix socket, or already closed
        else:
            stream.__class__ = ClientStream  # same object, two methods overridden
        super().handle_stream(stream, address)


def bind_public(host: str, port: int, reuse_port: bool = False) -> list[socket.socket]:
    """Bind the public port or raise a one-line StartupError."""
    where = f"{host or '*'}:{port}"
    try:
        return bind_sockets(port, host or None, backlog=1024, reuse_port=reuse_port)
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
    """One gateway: the public listener and the supervised Next.js child, or, with
    ``server.workers`` > 1, the parent of worker processes (workers.py)."""

    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self._stop = asyncio.Event()
        self._signals = 0
        self.supervisor: Releases | None = None
        self._tasks = BackgroundTasks("gateway")
        self.node: Node | None = None
        self.draining = False

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT; returns the process exit status."""
        nextjs.preflight(self.cfg)
        raise_fd_limit()
        if self.cfg.server.workers > 1:
            return await self._run_parent()
        sockets = bind_public(self.cfg.server.host, self.cfg.server.port)
        port = sockets[0].getsockname()[1]
        ensure_secrets(self.cfg)
        supervisor = self.supervisor = self._releases(port)
        served = self._serve(supervisor, port)
        served[0].add_sockets(sockets)
        self._install_signal_handlers()
        self._announce(port)
        supervisor.start()
        await self._stop.wait()
        log.info("shutting down")
        await self._shutdown(served)
        await supervisor.stop()
        log.info("stopped")
        return 0

    async def run_worker(self) -> int:
        """A worker process: serve the port with the parent's view of the child.

        It joins the listening set (binds the port) only once its engine is ready, or after
        ``engine.ready_timeout``: until then the kernel gives every connection to the other
        workers, instead of to a worker that would refuse their publishes with error 100."""
        raise_fd_limit()
        upstream = RemoteUpstream()
        follow = asyncio.get_running_loop().create_task(upstream.follow())
        port = self.cfg.server.port  # the parent's: already bound and held by it
        served = self._serve(upstream, port)
        self._install_signal_handlers()
        gone = asyncio.ensure_future(upstream.parent_gone.wait())
        stop = asyncio.ensure_future(self._stop.wait())
        started = time.monotonic()
        ready = asyncio.ensure_future(served[1].broker.ready(self.cfg.engine.ready_timeout))
        await asyncio.wait({ready, gone, stop}, return_when="FIRST_COMPLETED")
        if ready.done():
            if ready.result():
                engine = f"engine ready in {time.monotonic() - started:.2f} s"
            else:
                engine = "engine not ready"
                log.warning(
                    "engine not ready after %g s: serving anyway; publishes and subscribes fail "
                    "with error 100 (temporary) until it is",
                    self.cfg.engine.ready_timeout,
                )
            served[0].add_sockets(bind_public(self.cfg.server.host, port, reuse_port=True))
            log.info("worker serving port %d (pid %d, %s)", port, os.getpid(), engine)
            await asyncio.wait({gone, stop}, return_when="FIRST_COMPLETED")
        else:
            ready.cancel()
        await self._shutdown(served)
        follow.cancel()
        return 0

    async def _run_parent(self) -> int:
        port = reserve_port(self.cfg.server.host, self.cfg.server.port)
        self.cfg.server.port = port
        ensure_secrets(self.cfg)
        supervisor = self.supervisor = self._releases(port)
        grace = self.cfg.server.shutdown_grace + self.cfg.server.shutdown_spread + 5
        pool = WorkerPool(self.cfg, self.cfg.server.workers, grace=grace)
        supervisor.add_listener(lambda _state: pool.broadcast(state_message(supervisor)))
        self._install_signal_handlers()
        self._announce(port, f", {self.cfg.server.workers} workers")
        pool.start()
        supervisor.start()
        await self._stop.wait()
        log.info("shutting down")
        await pool.stop()
        await supervisor.stop()
        log.info("stopped")
        return 0

    def _serve(self, upstream: Any, port: int) -> tuple[HTTPServer, Node, ProxySettings]:
        """The server, its realtime node and proxy; it serves once given its sockets."""
        hooks = None
        if uses_hooks(self.cfg):
            hooks = HttpHooks(upstream.target, self.cfg.api.key, self.cfg.realtime.hooks.timeout)
        metrics = GatewayMetrics()
        purges = CachePurges(micro_cache_of(self.cfg))
        node = self.node = make_node(self.cfg, hooks, metrics.published, purges.control_handlers())
        node.start()
        app, proxy = make_app(
            self.cfg,
            upstream,
            node,
            time.monotonic(),
            port,
            draining=lambda: self.draining,
            metrics=metrics,
            purges=purges,
        )
        server = GatewayHTTPServer(
            FrontDoor(app, proxy),
            idle_connection_timeout=self.cfg.server.idle_connection_timeout,
            max_body_size=self.cfg.server.max_body_size,
            xheaders=False,  # the proxy computes X-Forwarded-* from what it sees itself
        )
        return server, node, proxy

    async def _shutdown(self, served: tuple[HTTPServer, Node, ProxySettings]) -> None:
        """Stop accepting; /_gateway/ready says 503; WebSocket clients get 3001, spread over
        server.shutdown_spread; in-flight HTTP requests get server.shutdown_grace to finish;
        then what is left is closed (the caller stops the Next.js child afterwards)."""
        server, node, proxy = served
        self.draining = True
        server.stop()
        started = time.monotonic()
        await node.shutdown(SHUTDOWN, self.cfg.server.shutdown_spread)
        deadline = started + self.cfg.server.shutdown_grace
        while proxy.in_flight > 0 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if proxy.in_flight > 0:
            log.warning(
                "closing %d HTTP request(s) still running after the %g s grace",
                proxy.in_flight,
                self.cfg.server.shutdown_grace,
            )
        await node.close()
        try:
            await asyncio.wait_for(server.close_all_connections(), timeout=5)
        except TimeoutError:
            log.warning("some client connections did not close within 5 s")

    def _announce(self, port: int, extra: str = "") -> None:
        mode = nextjs.child_kind(self.cfg)
        log.info(
            "listening on http://%s:%d (%s from %s%s, %s engine)",
            self.cfg.server.host or "*",
            port,
            mode,
            self.cfg.next.dir,
            extra,
            self.cfg.engine.kind,
        )

    def _releases(self, port: int) -> Releases:
        cfg = self.cfg
        return Releases(
            cfg,
            make_spec=lambda release: nextjs.child_spec(cfg, port, release),
            check_release=lambda release: nextjs.release_problem(cfg, release),
        )

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        # SIGHUP reloads in the process that owns the Next.js child; a worker ignores it (its
        # default action would end the worker).
        loop.add_signal_handler(signal.SIGHUP, self._on_reload)

    def _on_reload(self) -> None:
        """SIGHUP: start the release next.dir names now (releases.py); one at a time."""
        if self.supervisor is None or self._stop.is_set():
            return
        log.info("received SIGHUP: reloading the Next.js app")
        self._tasks.spawn(self.supervisor.reload(), "reload")

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("received %s: stopping (again to skip the grace period)", sig.name)
            self._stop.set()
        elif self.supervisor is not None:
            log.warning("received %s again: killing the child now", sig.name)
            asyncio.get_running_loop().create_task(self.supervisor.kill_now())
