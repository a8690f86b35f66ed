"""Typed configuration: every default lives here, in one place.

Layers, lowest to highest precedence: defaults < YAML file < environment < command-line flags.
Each field documents itself (``doc``), and carries its own validation (``low``/``high``,
``choices``), the environment variable that overrides it (``env``) and whether it is a secret
(masked by ``gateway check-config``).

Every mistake raises :class:`ConfigError` with one line that names the key and, where the
YAML parser knows it, the file and line. This module imports nothing else of the gateway.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

import yaml

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class ConfigError(Exception):
    """A configuration mistake. ``str()`` is the one line shown to the user."""


def setting(
    default: Any = dataclasses.MISSING,
    *,
    doc: str,
    factory: Any = dataclasses.MISSING,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[str, ...] | None = None,
    env: str | None = None,
    secret: bool = False,
    check: Callable[[Any], str | None] | None = None,
) -> Any:
    """Declare one configuration key with its default, documentation and constraints.

    ``check(value)`` returns a problem description, or None when the value is fine.
    """
    meta = {
        "doc": doc,
        "low": low,
        "high": high,
        "choices": choices,
        "env": env,
        "secret": secret,
        "check": check,
    }
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ServerConfig:
    host: str = setting("0.0.0.0", doc="Interface the public port binds to.", env="GATEWAY_HOST")
    port: int = setting(
        8000,
        doc="Public port for HTTP and WebSockets (0 = any free port).",
        low=0,
        high=65535,
        env="GATEWAY_PORT",
    )
    max_body_size: int = setting(
        100 * 1024 * 1024,
        doc="Largest request body proxied to Next.js, in bytes.",
        low=0,
    )
    idle_connection_timeout: float = setting(
        75.0,
        doc="Seconds an idle client keep-alive connection stays open.",
        low=1.0,
    )
    shutdown_grace: float = setting(
        10.0,
        doc="Seconds in-flight HTTP requests get to finish after SIGTERM (then the Next.js "
        "child is stopped with next.stop_grace).",
        low=0.0,
        high=3600.0,
    )
    shutdown_spread: float = setting(
        2.0,
        doc="Seconds over which WebSocket clients are disconnected (3001) at shutdown, so they "
        "do not all reconnect at the same moment.",
        low=0.0,
        high=600.0,
    )
    workers: int = setting(
        1,
        doc="Processes serving the public port (SO_REUSEPORT); more than 1 needs the Redis "
        "engine. Env: GATEWAY_WORKERS. Flag: --workers",
        low=1,
        high=256,
        env="GATEWAY_WORKERS",
    )


_JWT_ALGORITHMS = frozenset(
    {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256"}
)


def _hook_path(value: str) -> str | None:
    if value and (not value.startswith("/") or value.startswith("//") or " " in value):
        return f"{value!r} must be a path on the Next.js app, like /api/realtime/rpc"
    return None


def _delta_types(values: list[str]) -> str | None:
    unknown = [v for v in values if v != "fossil"]
    return f"{unknown[0]!r} is not a delta type (only 'fossil' is)" if unknown else None


def _ip_networks(values: list[str]) -> str | None:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            return f"{value!r} is not an IP address or CIDR network"
    return None


_MIME_PATTERN = re.compile(r"[A-Za-z0-9*][\w*!#$&^.+-]*/[A-Za-z0-9*][\w*!#$&^.+-]*", re.ASCII)


def _mime_patterns(values: list[str]) -> str | None:
    for value in values:
        if not _MIME_PATTERN.fullmatch(value):
            return f"{value!r} is not a media type pattern like text/* or application/json"
    return None


@dataclass
class CompressionConfig:
    enabled: bool = setting(
        True,
        doc="Compress responses from Next.js at the gateway (brotli or gzip, per the client's "
        "Accept-Encoding); Next.js is then asked for identity bodies.",
    )
    gzip_level: int = setting(6, doc="zlib level for gzip, 1 (fast) to 9 (small).", low=1, high=9)
    brotli_level: int = setting(
        5, doc="Brotli quality, 0 (fast) to 11 (small; far too slow per request).", low=0, high=11
    )
    min_size: int = setting(
        1024,
        doc="Bodies of a known length below this many bytes are sent as they are.",
        low=0,
        high=1024 * 1024 * 1024,
    )
    cache_bytes: int = setting(
        32 * 1024 * 1024,
        doc="Memory for compressed bodies of responses with a strong ETag (prerendered pages), "
        "so each is compressed once per build, in bytes (0: no cache); least recently used "
        "first out.",
        low=0,
        high=64 * 1024 * 1024 * 1024,
    )
    types: list[str] = setting(
        factory=lambda: [
            "text/*",
            "application/json",
            "application/*+json",
            "application/javascript",
            "application/x-javascript",
            "application/ecmascript",
            "application/xml",
            "application/*+xml",
            "application/x-component",
            "application/x-ndjson",
            "application/wasm",
            "image/svg+xml",
            "image/x-icon",
            "image/vnd.microsoft.icon",
            "font/ttf",
            "font/otf",
            "application/vnd.ms-fontobject",
        ],
        doc="Media types that are compressed (* is a wildcard); everything else, already "
        "compressed images, video, audio, woff/woff2 fonts and archives, is sent as it is.",
        check=_mime_patterns,
    )


@dataclass
class MicroCacheConfig:
    enabled: bool = setting(
        False,
        doc="Answer GET/HEAD from memory with responses Next.js marks as shared-cacheable "
        "(Cache-Control s-maxage, or public with max-age; docs/proxy.md, Micro-cache). Off: "
        "every request goes to Next.js.",
    )
    max_bytes: int = setting(
        64 * 1024 * 1024,
        doc="Memory for stored responses, in bytes (bodies, fields and keys), per process; "
        "least recently used first out.",
        low=1024,
        high=64 * 1024 * 1024 * 1024,
    )
    max_object_size: int = setting(
        1024 * 1024,
        doc="Largest body stored, in bytes; longer responses pass through.",
        low=0,
        high=1024 * 1024 * 1024,
    )
    max_ttl: float = setting(
        60.0,
        doc="Longest a response is served from memory, in seconds, whatever its s-maxage "
        "(and the longest it is served stale under stale-while-revalidate).",
        low=0.1,
        high=365 * 86400.0,
    )


@dataclass
class ProxyConfig:
    trusted_proxies: list[str] = setting(
        factory=list,
        doc="IPs or CIDR networks of proxies in front of the gateway whose X-Forwarded-*, "
        "Forwarded and X-Real-IP headers are believed; from anyone else they are replaced.",
        check=_ip_networks,
    )
    connect_timeout: float = setting(
        5.0, doc="Seconds to open a connection to Next.js.", low=0.1, high=600.0
    )
    first_byte_timeout: float = setting(
        300.0, doc="Seconds from the request sent to Next's response headers.", low=0.1
    )
    idle_timeout: float = setting(
        300.0,
        doc="Longest silence between two chunks of a response, in seconds (a stream that "
        "keeps sending is never cut).",
        low=0.1,
    )
    body_timeout: float = setting(
        60.0,
        doc="Longest silence while a request body is being read, in seconds (like nginx's "
        "client_body_timeout); the client then gets 408 and Next's connection is closed.",
        low=0.1,
        high=86400.0,
    )
    body_buffer: int = setting(
        65536,
        doc="Request body bytes the gateway holds before it takes a connection to Next.js "
        "(0: stream at once). A body that ends within it goes in one write with its head; a "
        "client that trickles a small body never holds a connection to Next.",
        low=0,
        high=64 * 1024 * 1024,
    )
    max_connections: int = setting(
        512,
        doc="Connections to Next.js in use at once (0: no limit). Further requests wait for "
        "one, first come first served, up to `queue_timeout`, then get 503.",
        low=0,
        high=1000000,
    )
    queue_timeout: float = setting(
        10.0,
        doc="Seconds a request waits for a connection to Next.js at `max_connections`.",
        low=0.0,
        high=3600.0,
    )
    pool_max_idle: int = setting(
        64, doc="Idle keep-alive connections to Next.js kept for reuse.", low=0, high=100000
    )
    pool_idle_timeout: float = setting(
        30.0,
        doc="Seconds an idle pooled connection is kept; `next start` is told to keep "
        "connections 5 s longer (`next dev` cannot be told, so there it is at most 4 s).",
        low=0.5,
        high=3600.0,
    )
    compression: CompressionConfig = setting(
        factory=CompressionConfig, doc="Compression of proxied responses."
    )
    micro_cache: MicroCacheConfig = setting(
        factory=MicroCacheConfig, doc="A short-lived cache of shared-cacheable responses."
    )


@dataclass
class StaticConfig:
    enabled: bool = setting(True, doc="Serve /_next/static/* from memory instead of Next.js.")
    max_file_size: int = setting(
        16 * 1024 * 1024, doc="Larger files are left to Next.js, in bytes.", low=0
    )
    max_total_size: int = setting(
        512 * 1024 * 1024,
        doc="Memory budget for the whole set, in bytes; files beyond it are left to Next.js.",
        low=0,
    )
    compress: bool = setting(
        True, doc="Precompress text assets (gzip, and brotli when the package is installed)."
    )
    keep_builds: int = setting(
        2,
        doc="Previous builds whose /_next/static files stay servable after a reload (skew "
        "protection: a tab opened before a deploy still loads its chunks); 0 = none.",
        low=0,
        high=20,
    )


@dataclass
class RestartConfig:
    backoff_initial: float = setting(
        0.5,
        doc="Ceiling of the first restart delay, in seconds (full jitter: 0..ceiling).",
        low=0.0,
        high=3600.0,
    )
    backoff_max: float = setting(
        30.0,
        doc="Cap of the restart delay ceiling, in seconds.",
        low=0.0,
        high=3600.0,
    )
    max_failures: int = setting(
        5,
        doc="Consecutive failed runs before the gateway gives up (crash loop).",
        low=1,
        high=1000,
    )
    stable_after: float = setting(
        30.0,
        doc="A run that stays up this long (seconds) resets the failure count.",
        low=0.0,
    )


@dataclass
class NextConfig:
    dir: str = setting(
        "nextjs-app",
        doc="The Next.js app directory (relative to the working directory): a project, or a "
        "standalone build's project root or .next/standalone folder.",
        env="GATEWAY_NEXT_DIR",
    )
    dev: bool = setting(False, doc="Run `next dev` instead of `next start`.")
    node: str = setting(
        "node",
        doc="Node.js executable: a name on PATH or a path (a version the installed Next.js "
        "accepts: its engines.node).",
    )
    port: int = setting(
        0,
        doc="Loopback port for the child (0 = a free port, chosen at each start).",
        low=0,
        high=65535,
    )
    ready_path: str = setting("/", doc="Path of the HTTP readiness probe; any response counts.")
    start_timeout: float = setting(
        60.0,
        doc="Seconds the child has to answer the probe before it counts as failed.",
        low=1.0,
        high=3600.0,
    )
    drain_timeout: float = setting(
        30.0,
        doc="After a reload's switch, the longest the previous child is given to finish the "
        "requests and streams in flight on it before it is stopped.",
        low=0.0,
        high=3600.0,
    )
    rollback_window: float = setting(
        10.0,
        doc="After a reload's switch, the previous child is kept this long: if the new one "
        "exits meanwhile, requests go back to the previous one.",
        low=0.0,
        high=3600.0,
    )
    stop_grace: float = setting(
        10.0,
        doc="Seconds between SIGTERM and SIGKILL when stopping the child.",
        low=0.0,
        high=3600.0,
    )
    command: list[str] = setting(
        factory=list,
        doc="Advanced: run this argv instead of Next.js; {host} and {port} are substituted.",
    )
    env: dict[str, str] = setting(factory=dict, doc="Extra environment for the child.")
    restart: RestartConfig = setting(factory=RestartConfig, doc="Restart policy.")


@dataclass
class AuthConfig:
    secret: str = setting(
        "",
        doc="HS256 secret shared with the Next.js app, which signs connection and subscription "
        "tokens with it (empty: a random one per run, handed to the child).",
        env="WS_SECRET",
        secret=True,
    )
    algorithms: list[str] = setting(
        factory=lambda: ["HS256"],
        doc="Accepted JWT algorithms; tokens signed otherwise are refused.",
        check=lambda algs: (
            None
            if algs and set(algs) <= _JWT_ALGORITHMS
            else f"must be a non-empty list of {', '.join(sorted(_JWT_ALGORITHMS))}"
        ),
    )
    public_key: str = setting(
        "", doc="PEM public key (or a path to one) for RS*/ES* tokens.", secret=False
    )
    jwks_url: str = setting("", doc="JWKS URL for RS*/ES* tokens (keys fetched and cached).")
    audience: str = setting("", doc="Required `aud` claim (empty: not checked).")
    issuer: str = setting("", doc="Required `iss` claim (empty: not checked).")
    require_exp: bool = setting(True, doc="Refuse connection tokens without `exp`.")
    leeway: float = setting(
        5.0, doc="Clock skew tolerated on exp/iat/nbf, seconds.", low=0.0, high=300.0
    )
    allow_anonymous: bool = setting(
        False, doc="Accept connections without a token (user id empty)."
    )


@dataclass
class ApiConfig:
    key: str = setting(
        "",
        doc="Key for the server API (/_gateway/api/...) (empty: a random one per run, handed "
        "to the child).",
        env="GATEWAY_API_KEY",
        secret=True,
    )
    allowed_networks: list[str] = setting(
        factory=lambda: ["127.0.0.0/8", "::1/128"],
        doc="Peers allowed to call the server API (IPs or CIDR networks).",
        check=_ip_networks,
    )


@dataclass
class NamespaceConfig:
    presence: bool = setting(False, doc="Track who is subscribed (presence, presence_stats).")
    join_leave: bool = setting(False, doc="Send join and leave pushes to subscribers.")
    history_size: int = setting(
        0, doc="Publications kept per channel (0 = no history).", low=0, high=1_000_000
    )
    history_ttl: float = setting(
        0.0, doc="Seconds history is kept after the last publication.", low=0.0
    )
    force_recovery: bool = setting(
        False, doc="Subscriptions are recoverable: after a reconnect, missed publications are sent."
    )
    allow_subscribe: bool = setting(True, doc="Connected users may subscribe.")
    allow_publish: bool = setting(False, doc="Subscribers may publish from the client.")
    allow_presence: bool = setting(
        False, doc="Subscribers may ask for presence (Centrifugo's allow_presence_for_subscriber)."
    )
    allow_presence_for_subscriber: bool = setting(
        False, doc="The same as allow_presence, under Centrifugo's name."
    )
    allow_presence_for_client: bool = setting(
        False, doc="Any connected client may ask for presence, subscribed or not."
    )
    allow_presence_for_anonymous: bool = setting(
        False,
        doc="With allow_presence_for_client: anonymous connections (no user) may too.",
    )
    allow_history: bool = setting(
        False, doc="Subscribers may ask for history (Centrifugo's allow_history_for_subscriber)."
    )
    allow_history_for_subscriber: bool = setting(
        False, doc="The same as allow_history, under Centrifugo's name."
    )
    allow_history_for_client: bool = setting(
        False, doc="Any connected client may ask for history, subscribed or not."
    )
    allow_history_for_anonymous: bool = setting(
        False,
        doc="With allow_history_for_client: anonymous connections (no user) may too.",
    )
    private: bool = setting(
        False, doc="Subscribing needs a subscription token (claims: sub, channel)."
    )
    allowed_delta_types: list[str] = setting(
        factory=list,
        doc="Delta compression subscribers may ask for: ['fossil'] or [] (needs "
        "force_recovery, so that a gap cannot leave a client with a stale base).",
        check=_delta_types,
    )
    delta_publish: bool = setting(
        False,
        doc="Publications go as fossil deltas against the previous one to subscribers that "
        "negotiated delta (sent whole when the delta would not be smaller).",
    )
    subscribe_hook: str = setting(
        "",
        doc="Path of a Next.js route handler asked before each subscribe ('' = none).",
        check=_hook_path,
    )
    publish_hook: str = setting(
        "",
        doc="Path of a Next.js route handler asked before each client publish ('' = none).",
        check=_hook_path,
    )


@dataclass
class HooksConfig:
    connect: str = setting(
        "",
        doc="Path of a Next.js route handler asked at each connect ('' = none).",
        check=_hook_path,
    )
    rpc: str = setting(
        "",
        doc="Path of a Next.js route handler answering client RPCs ('' = none: RPCs get 108).",
        check=_hook_path,
    )
    send: str = setting(
        "",
        doc="Path of a Next.js route handler told of client `send` messages ('' = none: a "
        "`send` closes the connection with 3508, as Centrifugo does without a handler).",
        check=_hook_path,
    )
    timeout: float = setting(
        5.0,
        doc="Seconds a hook may take; then the client gets error 100 (temporary).",
        low=0.1,
        high=60.0,
    )


@dataclass
class TransportsConfig:
    http_stream: bool = setting(
        True,
        doc="Bidirectional emulation over a streamed HTTP response: POST /connection/http_stream "
        "(centrifuge-js falls back to it when WebSockets are blocked).",
    )
    sse: bool = setting(
        True, doc="Bidirectional emulation over Server-Sent Events: GET /connection/sse."
    )
    uni_sse: bool = setting(
        True,
        doc="Unidirectional SSE (a bare EventSource, no SDK): GET /connection/uni_sse; the "
        "token's channels claim decides what it receives.",
    )
    uni_http_stream: bool = setting(
        True, doc="Unidirectional HTTP streaming (fetch): POST /connection/uni_http_stream."
    )
    uni_websocket: bool = setting(
        True, doc="Unidirectional WebSocket (pushes only): /connection/uni_websocket."
    )
    emulation_endpoint: str = setting(
        "/connection/emulation",
        doc="Where emulated transports POST client-to-server commands (the SDK's "
        "emulationEndpoint); it must stay under /connection/.",
        check=lambda v: (
            None
            if isinstance(v, str) and re.fullmatch(r"/connection/[A-Za-z0-9_.~-]+", v)
            else "must be a path /connection/<name> (letters, digits, _ . ~ -)"
        ),
    )
    max_request_size: int = setting(
        65536,
        doc="Largest body of an emulation POST or of a stream's opening request, in bytes "
        "(413 beyond).",
        low=256,
        high=16 * 1024 * 1024,
    )
    emulation_timeout: float = setting(
        5.0,
        doc="Seconds an emulation POST waits for the process holding its session (another "
        "worker or host, over the engine) to take it; then 504.",
        low=0.1,
        high=60.0,
    )


@dataclass
class RealtimeConfig:
    ping_interval: float = setting(25.0, doc="Seconds between server pings.", low=1.0, high=3600.0)
    pong_timeout: float = setting(
        8.0, doc="Seconds a client has to answer a ping.", low=1.0, high=3600.0
    )
    connect_timeout: float = setting(
        10.0, doc="Seconds a socket may stay open without a connect command.", low=1.0, high=3600.0
    )
    max_message_size: int = setting(65536, doc="Largest incoming frame, in bytes.", low=256)
    write_queue_max_bytes: int = setting(
        1024 * 1024,
        doc="Bytes queued for a slow client before it is disconnected (3008).",
        low=1024,
    )
    expired_close_delay: float = setting(
        25.0,
        doc="Seconds past a token's expiry before an unrefreshed connection is closed (3005).",
        low=0.0,
        high=3600.0,
    )
    max_channels_per_client: int = setting(128, doc="Subscriptions per connection.", low=1)
    max_channel_length: int = setting(255, doc="Longest channel name.", low=1, high=65536)
    command_rate: float = setting(100.0, doc="Commands per second a connection may send.", low=1.0)
    command_burst: int = setting(200, doc="Commands a connection may send in a burst.", low=1)
    allowed_origins: list[str] = setting(
        factory=list,
        doc="Origins allowed to open a WebSocket ([] = only the gateway's own origin; '*' = any).",
    )
    default: NamespaceConfig = setting(
        factory=NamespaceConfig, doc="Options of channels without a namespace."
    )
    namespaces: dict[str, NamespaceConfig] = setting(
        factory=dict, doc="Channel namespaces: `name:rest` channels take the options of `name`."
    )
    hooks: HooksConfig = setting(factory=HooksConfig, doc="Events answered by Next.js.")
    transports: TransportsConfig = setting(
        factory=TransportsConfig,
        doc="The endpoints besides /connection/websocket: fallbacks for when WebSockets are "
        "blocked, and unidirectional ones.",
    )


@dataclass
class EngineConfig:
    kind: str = setting(
        "memory",
        doc="Where channels, presence and history live: memory (one process) or redis.",
        choices=("memory", "redis"),
        env="GATEWAY_ENGINE",
    )
    redis_url: str = setting(
        "redis://127.0.0.1:6379/0",
        doc="Redis URL for the Redis engine.",
        env="GATEWAY_REDIS_URL",
        secret=True,
    )
    redis_urls: list[str] = setting(
        factory=list,
        doc="Several Redis URLs: channels are spread over them by consistent hashing (shards, "
        "not replicas). Empty: redis_url alone.",
    )
    prefix: str = setting("gw", doc="Prefix of every Redis key and pub/sub channel.")
    presence_ttl: float = setting(
        60.0,
        doc="Seconds a process's presence entries outlive it (refreshed every third).",
        low=3.0,
        high=3600.0,
    )
    ready_timeout: float = setting(
        5.0,
        doc="Seconds a worker (server.workers > 1) waits for the engine to connect to every "
        "Redis server before it takes connections; after that it serves anyway (publishes fail "
        "with error 100 until Redis is back).",
        low=0.0,
        high=300.0,
    )


@dataclass
class LogConfig:
    level: str = setting(
        "info",
        doc="Log level; `debug` also shows Python tracebacks of internal errors.",
        choices=("debug", "info", "warning", "error"),
    )
    format: str = setting(
        "text",
        doc="text (one readable line per record) or json (one JSON object per line). "
        "Flag: --log-format",
        choices=("text", "json"),
        env="GATEWAY_LOG_FORMAT",
    )
    access: bool = setting(True, doc="Log one line per HTTP request and WebSocket upgrade.")


@dataclass
class MetricsConfig:
    enabled: bool = setting(True, doc="Serve Prometheus metrics at /_gateway/metrics.")
    allowed_networks: list[str] = setting(
        factory=lambda: ["127.0.0.0/8", "::1/128"],
        doc="Peers allowed to read the metrics (IPs or CIDR networks); others get 403.",
        check=_ip_networks,
    )


@dataclass
class GatewayConfig:
    server: ServerConfig = setting(factory=ServerConfig, doc="The public listener.")
    next: NextConfig = setting(factory=NextConfig, doc="The supervised Next.js child.")
    proxy: ProxyConfig = setting(factory=ProxyConfig, doc="The HTTP reverse proxy to Next.js.")
    static: StaticConfig = setting(factory=StaticConfig, doc="The /_next/static fast path.")
    realtime: RealtimeConfig = setting(factory=RealtimeConfig, doc="The WebSocket hub.")
    auth: AuthConfig = setting(factory=AuthConfig, doc="Realtime connection authentication.")
    api: ApiConfig = setting(factory=ApiConfig, doc="Server API.")
    engine: EngineConfig = setting(factory=EngineConfig, doc="Realtime engine.")
    log: LogConfig = setting(factory=LogConfig, doc="Logging.")
    metrics: MetricsConfig = setting(factory=MetricsConfig, doc="Prometheus metrics.")


# ---------------------------------------------------------------------------------------------
# YAML with line numbers


class _MarkedDict(dict):  # type: ignore[type-arg]
    """A mapping from the YAML file that remembers the line of each key."""

    lines: dict[str, int]


class _MarkedLoader(yaml.SafeLoader):
    pass


def _construct_marked_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> _MarkedDict:
    loader.flatten_mapping(node)
    result = _MarkedDict()
    result.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise ConfigError(
                f"line {key_node.start_mark.line + 1}: keys must be strings, got {key!r}"
            )
        if key in result:
            raise ConfigError(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = key_node.start_mark.line + 1
    return result


_MarkedLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_marked_mapping
)


def _read_yaml(path: str) -> Mapping[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(f"{path}: cannot read config file: {reason}") from None
    try:
        data = yaml.load(text, Loader=_MarkedLoader)  # noqa: S506 - SafeLoader subclass
    except ConfigError as e:
        raise ConfigError(f"{path}:{str(e).removeprefix('line ')}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}" if mark else path
        raise ConfigError(f"{where}: invalid YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, not a value")
    return data


# ---------------------------------------------------------------------------------------------
# Coercion and validation


def _type_name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if tp in names:
        return names[tp]
    origin = typing.get_origin(tp)
    if origin is list:
        return "a list of strings"
    if origin is dict:
        return "a mapping of strings"
    return "a mapping"


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(tp: Any, value: Any, key: str, meta: Mapping[str, Any], where: str) -> Any:
    """Check ``value`` against the declared type and constraints; return the typed value."""

    def fail(problem: str) -> typing.NoReturn:
        raise ConfigError(f"{where}{key}: {problem}")

    if typing.get_origin(tp) in (Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if tp is bool:
        if not isinstance(value, bool):
            fail(f"expected true or false, got {value!r}")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail(f"expected an integer, got {value!r}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(f"expected a number, got {value!r}")
        value = float(value)
    elif tp is str:
        if not isinstance(value, str):
            fail(f"expected a string, got {value!r}")
    elif typing.get_origin(tp) is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            fail(f"expected a list of strings, got {value!r}")
        value = list(value)
    elif typing.get_origin(tp) is dict:
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            fail(f"expected a mapping of strings to strings, got {value!r}")
        value = dict(value)
    low, high, choices = meta.get("low"), meta.get("high"), meta.get("choices")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        fail(f"{value!r} is out of range (must be {bounds})")
    if choices is not None and value not in choices:
        fail(f"{value!r} is not one of: {', '.join(choices)}")
    check = meta.get("check")
    if check is not None and (problem := check(value)):
        fail(problem)
    return value


def _apply_mapping(obj: Any, data: Mapping[str, Any], prefix: str, path: str | None) -> None:
    """Set the fields of dataclass instance ``obj`` from a YAML mapping, recursively."""
    hints = typing.get_type_hints(type(obj))
    fields = {f.name: f for f in dataclasses.fields(obj)}
    lines = getattr(data, "lines", {})
    for name, value in data.items():
        key = f"{prefix}{name}"
        where = f"{path}:{lines[name]}: " if path and name in lines else ""
        if name not in fields:
            hint = difflib.get_close_matches(name, list(fields), n=1)
            suggestion = f" (did you mean '{prefix}{hint[0]}'?)" if hint else ""
            raise ConfigError(f"{where}unknown key '{key}'{suggestion}")
        tp = hints[name]
        if _is_dataclass_type(tp):
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{key}: expected a mapping of settings, got {value!r}")
            _apply_mapping(getattr(obj, name), value, f"{key}.", path)
        elif (section_type := _dataclass_values(tp)) is not None:
            setattr(obj, name, _named_sections(section_type, value, key, where, path))
        else:
            setattr(obj, name, _coerce(tp, value, key, fields[name].metadata, where))


def _dataclass_values(tp: Any) -> type | None:
    """For ``dict[str, SomeSettings]``, the settings class; None otherwise."""
    if typing.get_origin(tp) is dict:
        value_type = typing.get_args(tp)[1]
        if _is_dataclass_type(value_type):
            return value_type  # type: ignore[no-any-return]
    return None


def _named_sections(
    cls: type, value: Any, key: str, where: str, path: str | None
) -> dict[str, Any]:
    """A mapping of names to sections of settings (e.g. channel namespaces)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}{key}: expected a mapping of names to settings, got {value!r}")
    lines = getattr(value, "lines", {})
    out: dict[str, Any] = {}
    for name, section in value.items():
        at = f"{path}:{lines[name]}: " if path and name in lines else where
        if not _NAME.fullmatch(name):
            raise ConfigError(f"{at}{key}: {name!r} is not a valid name (letters, digits, _ and -)")
        if section is not None and not isinstance(section, dict):
            raise ConfigError(f"{at}{key}.{name}: expected a mapping of settings, got {section!r}")
        instance = cls()
        _apply_mapping(instance, section or {}, f"{key}.{name}.", path)
        out[name] = instance
    return out


def _parse_env_value(tp: Any, raw: str, var: str, key: str) -> Any:
    if tp is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{var}={raw!r}: {key}: expected true or false")
    if tp in (int, float):
        try:
            return tp(raw.strip())
        except ValueError:
            raise ConfigError(f"{var}={raw!r}: {key}: expected {_type_name(tp)}") from None
    return raw


def iter_settings(
    cls: type = GatewayConfig, prefix: str = ""
) -> typing.Iterator[tuple[str, Any, Any]]:
    """Yield ``(dotted key, type, dataclass field)`` for every leaf setting."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if _is_dataclass_type(tp):
            yield from iter_settings(tp, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", tp, f


def _set_dotted(cfg: GatewayConfig, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    target: Any = cfg
    for part in parents:
        target = getattr(target, part)
    setattr(target, leaf, value)


def _settings_by_key() -> dict[str, tuple[Any, Any]]:
    return {key: (tp, f) for key, tp, f in iter_settings()}


def load_config(
    path: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> GatewayConfig:
    """Build the effective configuration: defaults < ``path`` < ``environ`` < ``overrides``.

    ``overrides`` maps dotted keys (``"server.port"``) to values from command-line flags.
    Raises :class:`ConfigError` on the first mistake.
    """
    cfg = GatewayConfig()
    if path is not None:
        _apply_mapping(cfg, _read_yaml(path), "", path)
    settings = _settings_by_key()
    environ = os.environ if environ is None else environ
    for key, (tp, f) in settings.items():
        var = f.metadata.get("env")
        if var and environ.get(var, "") != "":
            value = _parse_env_value(tp, environ[var], var, key)
            _set_dotted(cfg, key, _coerce(tp, value, key, f.metadata, f"{var}={environ[var]!r}: "))
    for key, value in (overrides or {}).items():
        tp, f = settings[key]
        flag = "--" + key.rsplit(".", 1)[-1].replace("_", "-")
        _set_dotted(cfg, key, _coerce(tp, value, key, f.metadata, f"{flag} {value}: "))
    _check_consistency(cfg, path)
    return cfg


def config_from_data(data: Mapping[str, Any]) -> GatewayConfig:
    """A configuration from plain data (``dataclasses.asdict`` of one): how a worker process
    receives its parent's effective configuration."""
    cfg = GatewayConfig()
    _apply_mapping(cfg, data, "", None)
    return cfg


def _check_consistency(cfg: GatewayConfig, path: str | None) -> None:
    """Rules that involve several keys."""
    where = f"{path}: " if path else ""
    sections = {"realtime.default": cfg.realtime.default}
    sections.update({f"realtime.namespaces.{n}": ns for n, ns in cfg.realtime.namespaces.items()})
    for key, ns in sections.items():
        if ns.force_recovery and not (ns.history_size and ns.history_ttl):
            raise ConfigError(
                f"{where}{key}.force_recovery needs history (history_size and history_ttl > 0)"
            )
    if cfg.server.workers > 1 and cfg.engine.kind != "redis":
        raise ConfigError(
            f"{where}server.workers: {cfg.server.workers} workers need engine.kind: redis "
            "(with the memory engine each worker would see only its own clients)"
        )
    if cfg.realtime.pong_timeout >= cfg.realtime.ping_interval:
        raise ConfigError(f"{where}realtime.pong_timeout must be shorter than ping_interval")


# ---------------------------------------------------------------------------------------------
# Presentation


def _mask(value: str) -> str:
    if not value:
        return "(unset)"
    if "://" in value:
        # A URL is only secret in its password: redis://user:pass@host -> redis://user:***@host
        scheme, rest = value.split("://", 1)
        if "@" in rest:
            creds, host = rest.rsplit("@", 1)
            user = creds.split(":", 1)[0] if ":" in creds else ""
            return f"{scheme}://{user}:***@{host}"
        return value
    return f"*** ({len(value)} characters)"


def to_masked_dict(cfg: Any) -> dict[str, Any]:
    """The effective configuration as plain data, with every secret masked."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = to_masked_dict(value)
        elif isinstance(value, dict) and any(dataclasses.is_dataclass(v) for v in value.values()):
            out[f.name] = {k: to_masked_dict(v) for k, v in value.items()}
        elif f.metadata.get("secret"):
            out[f.name] = _mask(value)
        else:
            out[f.name] = value
    return out


def render_effective(cfg: GatewayConfig) -> str:
    return yaml.safe_dump(to_masked_dict(cfg), sort_keys=False, default_flow_style=False)
