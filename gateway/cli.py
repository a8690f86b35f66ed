"""Command line: ``gateway run``, ``gateway check-config`` and ``gateway reload``.

Exit status: 0 after a clean stop, 1 when the gateway cannot start (one line says why),
2 for a usage or configuration mistake. No traceback reaches the terminal unless the log level
is ``debug``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from gateway import __version__
from gateway.config import ConfigError, load_config, render_effective
from gateway.errors import StartupError

EXIT_STARTUP = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="Serve a Next.js app and its WebSockets on one port.",
    )
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="start the gateway and its Next.js child")
    run.add_argument("--config", metavar="F", help="YAML config file (default: built-in defaults)")
    run.add_argument("--host", metavar="H", help="interface to listen on (server.host)")
    run.add_argument("--port", metavar="N", type=int, help="public port (server.port)")
    run.add_argument("--next-dir", metavar="D", help="the Next.js app directory (next.dir)")
    run.add_argument("--dev", action="store_true", default=None, help="run `next dev` (next.dev)")
    run.add_argument(
        "--workers", metavar="N", type=int, help="processes serving the port (server.workers)"
    )
    run.add_argument(
        "--log-format", choices=("text", "json"), help="text or json log lines (log.format)"
    )
    commands.add_parser("_worker", help=argparse.SUPPRESS)  # started by `run --workers N`

    check = commands.add_parser("check-config", help="validate a config file and print it")
    check.add_argument("file", metavar="F", help="YAML config file")

    reload = commands.add_parser(
        "reload", help="reload the Next.js app of a running gateway (SIGHUP) and wait"
    )
    reload.add_argument("--config", metavar="F", help="the gateway's config (for its port)")
    reload.add_argument("--port", metavar="N", type=int, help="the gateway's port")
    reload.add_argument(
        "--timeout", metavar="S", type=float, default=120.0, help="seconds to wait (120)"
    )
    return parser


def _flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    flags = {
        "server.host": args.host,
        "server.port": args.port,
        "next.dir": args.next_dir,
        "next.dev": args.dev,
        "server.workers": args.workers,
        "log.format": args.log_format,
    }
    return {key: value for key, value in flags.items() if value is not None}


def _fail(status: int, message: str) -> int:
    print(f"gateway: {message}", file=sys.stderr)
    return status


def _run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop when it is installed: its event loop costs less per I/O event, which the
    proxy benchmark measures (docs/benchmarks.md)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return int(uvloop.run(main))


def _worker() -> int:
    """A worker of `gateway run --workers N` (gateway/workers.py): its configuration comes
    from the parent."""
    import json
    import os

    from gateway.app import Gateway
    from gateway.config import config_from_data
    from gateway.observability import configure_logging
    from gateway.workers import CONFIG_ENV, ID_ENV

    cfg = config_from_data(json.loads(os.environ[CONFIG_ENV]))
    configure_logging(cfg.log.level, tag=f"w{os.environ.get(ID_ENV, '?')}", fmt=cfg.log.format)
    return _run_loop(Gateway(cfg).run_worker())


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "check-config":
            cfg = load_config(args.file)
            sys.stdout.write(f"# {args.file}: valid. Effective configuration (secrets masked):\n")
            sys.stdout.write(render_effective(cfg))
            return 0
        if args.command == "_worker":
            return _worker()
        if args.command == "reload":
            from gateway.reload_command import reload

            port = args.port or load_config(args.config).server.port
            return reload(port, args.timeout)
        cfg = load_config(args.config, overrides=_flag_overrides(args))
    except ConfigError as e:
        return _fail(EXIT_USAGE, f"config error: {e}")

    try:
        from gateway.app import Gateway
        from gateway.observability import configure_logging
    except ImportError as e:  # a packaging mistake or a missing dependency: say which
        return _fail(EXIT_STARTUP, f"incomplete installation: {e} (reinstall the gateway)")

    configure_logging(cfg.log.level, fmt=cfg.log.format)
    if cfg.auth.secret and len(cfg.auth.secret.encode()) < 32:
        logging.getLogger("gateway").warning(
            "WS_SECRET is shorter than 32 bytes: HS256 tokens signed with it are easy to forge"
        )
    try:
        return _run_loop(Gateway(cfg).run())
    except StartupError as e:
        return _fail(EXIT_STARTUP, str(e))
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        return 130
    except Exception as e:  # an internal error: one line, details at log level debug
        logging.getLogger("gateway").debug("internal error", exc_info=True)
        return _fail(EXIT_STARTUP, f"internal error: {type(e).__name__}: {e}")
