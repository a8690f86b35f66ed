"""Logging set-up: one line per record, the child's output prefixed, no tracebacks by default."""

from __future__ import annotations

import logging
import re
import sys
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


def configure_logging(level: str = "info", tag: str = "") -> None:
    """Send every record to stderr (container friendly), replacing earlier handlers. ``tag``
    marks the lines of a worker process (``w2``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_GatewayFormatter(show_tracebacks=level == "debug", tag=tag))
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
    r"(?i)([?&](?:token|jwt|access_token|id_token|api_key|apikey|key|password|secret)=)[^&#]*"
)


def redact_uri(uri: str) -> str:
    """The URI with the values of token-like query parameters replaced (never log secrets)."""
    if "=" not in uri:
        return uri
    return _SECRET_PARAMS.sub(r"\1[redacted]", uri)


access_log = logging.getLogger("gateway.access")


def log_handler_request(handler: Any) -> None:
    """Tornado's ``log_function``: one access line per request, tokens redacted."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if access_log.isEnabledFor(level):
        request = handler.request
        access_log.log(
            level,
            "%d %s %s (%s) %.2fms",
            status,
            request.method,
            redact_uri(request.uri or ""),
            request.remote_ip,
            1000.0 * request.request_time(),
        )
