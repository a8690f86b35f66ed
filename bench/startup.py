"""Start-up and restart times of the gateway with the real bundled Next.js app.

    .venv/bin/python bench/startup.py [--runs N]

Measures, in one run:
  * baseline: `next start` spawned directly -> first HTTP response;
  * gateway:  `gateway run` spawned -> /_gateway/ready answers 200 (Python start-up,
    preflight, binding, spawning Next and probing it);
  * restart:  kill -9 of the Next.js child -> /_gateway/ready answers 200 with a new pid
    (includes the restart delay: full jitter, uniform in [0, 0.5 s] after one crash).
Prints median / min / max of each and the ratio gateway / direct.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.procs import ROOT, GatewayProcess, free_port, http_request

NEXT_DIR = ROOT / "nextjs-app"
ENV = {**os.environ, "NEXT_TELEMETRY_DISABLED": "1"}


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            http_request(url, method="HEAD", timeout=1)
            return
        except OSError:
            time.sleep(0.005)
    raise SystemExit(f"{url} did not answer within {timeout} s")


def direct_start() -> float:
    port = free_port()
    started = time.monotonic()
    proc = subprocess.Popen(
        ["node", "node_modules/next/dist/bin/next", "start", "-H", "127.0.0.1", "-p", str(port)],
        cwd=NEXT_DIR,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/")
        return time.monotonic() - started
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()


def ready_pid(gw: GatewayProcess) -> int | None:
    try:
        status, _, body = gw.request("/_gateway/ready", timeout=1)
    except OSError:
        return None
    return json.loads(body)["next"]["pid"] if status == 200 else None


def gateway_start_and_restart(workdir: Path) -> tuple[float, float]:
    workdir.mkdir(parents=True)
    gw = GatewayProcess(workdir, {"next": {"dir": str(NEXT_DIR)}})
    started = time.monotonic()
    gw.start()
    try:
        while ready_pid(gw) is None:
            time.sleep(0.005)
        start = time.monotonic() - started
        old = ready_pid(gw)
        assert old is not None
        killed = time.monotonic()
        os.kill(old, signal.SIGKILL)
        while (pid := ready_pid(gw)) is None or pid == old:
            time.sleep(0.005)
        return start, time.monotonic() - killed
    finally:
        gw.close()


def summary(name: str, values: list[float]) -> str:
    return (
        f"{name:<34} median {statistics.median(values) * 1000:7.0f} ms   "
        f"min {min(values) * 1000:6.0f}   max {max(values) * 1000:6.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    if not (NEXT_DIR / ".next" / "BUILD_ID").exists():
        raise SystemExit("build the app first: make build")
    direct, start, restart = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            direct.append(direct_start())
            s, r = gateway_start_and_restart(Path(tmp) / str(i))
            start.append(s)
            restart.append(r)
    print(f"runs: {args.runs} (interleaved), python {sys.version.split()[0]}")
    print(summary("direct: next start -> first HTTP", direct))
    print(summary("gateway run -> /_gateway/ready 200", start))
    print(summary("kill -9 next -> ready again", restart))
    ratio = statistics.median(start) / statistics.median(direct)
    print(f"ratio gateway start / direct start: {ratio:.2f}x")


if __name__ == "__main__":
    main()
