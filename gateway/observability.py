"""Logging set-up: one line per record, the child's output prefixed, no tracebacks by default."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import warnings
from typing import Any


class _GatewayFormatter(logging.Formatter):
    """``time level source: message``; a child's line reads ``time level [next] line``.

    An exception is rendered as one line (its type and message) unless ``show_tracebacks``:
    a user's terminal gets a readable log, and ``log.level: debug`` gets the details.
    """

    def __init__(self, show_tracebacks: bool, tag: str = "") -> None:
        tagged = f"{tag} " if tag else ""
        super().__init__(f"%(asctime)s %(levelname)-7s {tagged}%(source)s %(message)s")
        self.show_tracebacks = show_tracebacks

    def format(self, record: logging.LogRecord) -> str:
        name = record.name
        record.source = f"[{name[6:]}]" if name.startswith("child.") else f"{name}:"
        if record.exc_info and not self.show_tracebacks:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return super().format(record)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return super().formatTime(record, "%Y-%m-%d %H:%M:%S") + f".{int(record.msecs):03d}"


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and an access line's fields."""

    def __init__(self, show_tracebacks: bool, tag: str = "") -> None:
        super().__init__()
        self.show_tracebacks = show_tracebacks
        self.tag = tag

    def format(self, record: logging.LogRecord) -> str:
        name = record.name
        out: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": name[6:] if name.startswith("child.") else name,
            "message": record.getMessage(),
        }
        if name.startswith("child."):
            out["source"] = "child"
        if self.tag:
            out["worker"] = self.tag
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            exc = record.exc_info[1]
            out["error"] = f"{type(exc).__name__}: {exc}"
            if self.show_tracebacks:
                out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return time.strftime(datefmt or "%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))


def configure_logging(level: str = "info", tag: str = "", fmt: str = "text") -> None:
    """Send every record to stderr (container friendly), replacing earlier handlers. ``tag``
    marks the lines of a worker process (``w2``); ``fmt`` is text or json."""
    handler = logging.StreamHandler(sys.stderr)
    debug = level == "debug"
    formatter: logging.Formatter = (
        _JsonFormatter(debug, tag) if fmt == "json" else _GatewayFormatter(debug, tag=tag)
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Library warnings become one log line each, not a multi-line dump on stderr; PyJWT's
    # key-length warning repeats at every token and is reported once at start-up instead.
    logging.captureWarnings(True)
    warnings.filterwarnings("ignore", message=".*HMAC key is .* bytes long.*")


_SECRET_PARAMS = re.compile(
    # cf_connect: a realtime connect request (sse, uni_*), token and connect data included.
    r"(?i)([?&](?:token|jwt|access_token|id_token|api_key|apikey|key|password|secret"
    r"|cf_connect)=)[^&#]*"
)


# A JWT is a bearer credential whatever carries it (`?auth=`, `?t=`, a path segment, a line the
# child prints). RFC 7515/7516 compact forms: a base64url JSON header, then two (JWS) or four
# (JWE) more segments, any of which may be empty. The header's "{" encodes as "e", followed by
# "y" for a quote or a space and "w" for a newline or tab; real headers (`{"alg":"none"}` is the
# shortest) are 19+ characters, so words and host names with dots are left alone. It starts a
# word, or follows a percent-escape (`?next=%2Flive%3Ft%3DeyJ...`).
_JWT = re.compile(
    r"(?:(?<![A-Za-z0-9_-])|(?<=%[0-9A-Fa-f]{2}))"
    r"e[yw][A-Za-z0-9_-]{14,}(?:\.[A-Za-z0-9_-]*){2}(?:(?:\.[A-Za-z0-9_-]*){2})?"
)


def redact_uri(uri: str) -> str:
    """The URI (or a child's log line) with the values of token-like query parameters and
    anything shaped like a JWT replaced by ``[redacted]`` (never log secrets)."""
    if "=" in uri:
        uri = _SECRET_PARAMS.sub(r"\1[redacted]", uri)
    # The substring tests cost ~50 ns; the regex ~400 ns on a typical static path.
    if "ey" in uri or "ew" in uri:
        uri = _JWT.sub("[redacted]", uri)
    return uri


access_log = logging.getLogger("gateway.access")


def log_access(
    method: str, uri: str, status: int, size: int | None, remote: str, seconds: float
) -> None:
    """One access line: method, path (query secrets redacted), status, bytes, duration, client
    IP. In JSON logs the same as fields."""
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if not access_log.isEnabledFor(level):
        return
    path = redact_uri(uri)
    access_log.log(
        level,
        "%d %s %s %s %s %.2fms",
        status,
        method,
        path,
        "-" if size is None else f"{size}B",
        remote,
        seconds * 1000,
        extra={
            "fields": {
                "method": method,
                "path": path,
                "status": status,
                "bytes": size,
                "duration_ms": round(seconds * 1000, 3),
                "client": remote,
            }
        },
    )


def handler_logger(metrics: Any | None, route_kind: Any, forwarding: Any) -> Any:
    """Tornado's ``log_function``: the access line (with the client's address as
    ``forwarding`` sees it), and the request counted in the metrics."""

    def log_handler_request(handler: Any) -> None:
        request = handler.request
        status = handler.get_status()
        if metrics is not None:
            metrics.response(route_kind(request.path), status)
        length = handler._headers.get("Content-Length")  # what Tornado sent, when it knows
        log_access(
            request.method or "-",
            request.uri or "",
            status,
            int(length) if length and length.isdigit() else None,
            forwarding.client_ip(request.remote_ip or "-", request.headers),
            request.request_time(),
        )

    return log_handler_request
