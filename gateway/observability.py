"""Logging set-up: one line per record, the child's output prefixed, no tracebacks by default."""

from __future__ import annotations

import logging
import sys


class _GatewayFormatter(logging.Formatter):
    """``time level source: message``; a child's line reads ``time level [next] line``.

    An exception is rendered as one line (its type and message) unless ``show_tracebacks``:
    a user's terminal gets a readable log, and ``log.level: debug`` gets the details.
    """

    def __init__(self, show_tracebacks: bool) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(source)s %(message)s")
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


def configure_logging(level: str = "info") -> None:
    """Send every record to stderr (container friendly), replacing earlier handlers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_GatewayFormatter(show_tracebacks=level == "debug"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
