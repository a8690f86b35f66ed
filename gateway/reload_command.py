"""``gateway reload``: reload the Next.js app of a running gateway and wait for the outcome.

It finds the gateway by its port (``--port``, ``GATEWAY_PORT``, or the config file), reads
``/_gateway/ready`` for the process to signal and the current reload generation, sends SIGHUP
(the same as ``supervisorctl signal HUP gateway``; in the shipped image, PID 1 is
supervisord, which takes SIGHUP as "restart everything": use ``docker exec <c> gateway
reload``), then polls until that reload is decided. Exit 0 when the new release serves, 1
with the reason when it was refused (the previous release keeps serving), 2 when no gateway
answers.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import sys
import time
from typing import Any

EXIT_OK, EXIT_REFUSED, EXIT_NO_GATEWAY = 0, 1, 2


def _ready(port: int) -> dict[str, Any] | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/_gateway/ready")
        body = conn.getresponse().read()
        state: dict[str, Any] = json.loads(body)
        return state
    except (OSError, ValueError):
        return None
    finally:
        conn.close()


def reload(port: int, timeout: float) -> int:
    state = _ready(port)
    if state is None or "reload" not in state.get("next", {}):
        print(f"gateway reload: no gateway answers on 127.0.0.1:{port}", file=sys.stderr)
        return EXIT_NO_GATEWAY
    child = state["next"]
    generation = int(child["reload"]["generation"])
    try:
        os.kill(int(child["gateway_pid"]), signal.SIGHUP)
    except (OSError, KeyError, TypeError, ValueError) as e:
        print(f"gateway reload: cannot signal the gateway: {e}", file=sys.stderr)
        return EXIT_NO_GATEWAY
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.2)
        state = _ready(port)
        info = (state or {}).get("next", {}).get("reload", {})
        last = info.get("last") or {}
        if info.get("generation", 0) > generation and last.get("state") != "reloading":
            if last.get("state") == "ok":
                print(
                    f"gateway reload: serving {last.get('release')} (build "
                    f"{last.get('build_id')}) after {last.get('switch_seconds')} s"
                )
                return EXIT_OK
            print(f"gateway reload: refused: {last.get('error')}", file=sys.stderr)
            return EXIT_REFUSED
    print(f"gateway reload: no outcome within {timeout:g} s", file=sys.stderr)
    return EXIT_REFUSED
