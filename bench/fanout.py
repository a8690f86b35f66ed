"""Fan-out benchmark: the gateway's hub vs the seed-style Node custom server with `ws`.

    .venv/bin/python bench/fanout.py [--duration 8] [--sizes 1000,5000] [--idle 10000]

One channel, N subscribers and one publisher, all WebSockets from one Node load generator
(bench/node/fanout-clients.mjs, the same for both servers). The gateway speaks the Centrifugo
protocol (the publisher uses the client `publish` command, each publication is pushed to every
subscriber); the baseline broadcasts every message it receives to every other client
(bench/node/custom-server.js: `http` + `next().getRequestHandler()` + `ws`). Both answer the
publisher (publish reply / "ack"), which keeps a bounded window of messages in flight.

Runs, for each N, against both servers in the same run:
  * saturation: the publisher keeps --window messages in flight; deliveries/s and latency;
  * fixed rate: 50,000 deliveries/s (50,000 / N messages/s); latency p50/p99.
Then RSS per idle connection: --idle connections connected and subscribed, the server's RSS
growth divided by their number.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.procs import ROOT, GatewayProcess, free_port, rss_bytes, standin_command
from support.realtime import SECRET, token

NODE = ROOT / "bench" / "node"
ENV = {**os.environ, "NEXT_TELEMETRY_DISABLED": "1"}
CHANNEL = "bench:room"


def lift_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def ensure_node_modules() -> None:
    if not (NODE / "node_modules" / "ws").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE, check=True)


def start_gateway(tmp: Path) -> GatewayProcess:
    config = {
        "next": {"dir": ".", "command": standin_command()},
        "log": {"level": "warning"},
        "realtime": {
            "command_rate": 1_000_000,
            "command_burst": 1_000_000,
            "write_queue_max_bytes": 16 * 1024 * 1024,
            "namespaces": {"bench": {"allow_publish": True}},
        },
    }
    gw = GatewayProcess(tmp, config, env={"WS_SECRET": SECRET})
    gw.start_ready(30)
    return gw


def start_custom_server() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        ["node", str(NODE / "custom-server.js"), str(port), str(ROOT / "nextjs-app")],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=lift_fd_limit,
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # "custom server ready"
    return proc, port


def load(options: dict[str, object]) -> dict[str, float]:
    out = subprocess.run(
        ["node", str(NODE / "fanout-clients.mjs"), json.dumps(options)],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lift_fd_limit,
        cwd=NODE,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def idle_rss(pid: int, options: dict[str, object]) -> float:
    """Bytes of server RSS per idle connection."""
    before = rss_bytes(pid)
    proc = subprocess.Popen(
        ["node", str(NODE / "idle-clients.mjs"), json.dumps(options)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lift_fd_limit,
        cwd=NODE,
    )
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline()
    assert line.startswith("ready"), line
    time.sleep(2.0)
    after = rss_bytes(pid)
    proc.stdin.close()
    proc.wait(30)
    return (after - before) / int(options["subscribers"])  # type: ignore[call-overload]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--sizes", default="1000,5000")
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--idle", type=int, default=10000)
    args = parser.parse_args()
    ensure_node_modules()
    lift_fd_limit()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[tuple[str, int, str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        gw = start_gateway(Path(tmp))
        custom, custom_port = start_custom_server()
        try:
            servers = {
                "gateway": {
                    "url": f"ws://127.0.0.1:{gw.port}/connection/websocket",
                    "protocol": "centrifugo",
                    "token": token("bench", ttl=3600),
                },
                "node-ws": {"url": f"ws://127.0.0.1:{custom_port}/ws", "protocol": "raw"},
            }
            for n in sizes:
                for mode, rate in (("saturation", 0), ("50k/s", 50_000 / n)):
                    for name, base in servers.items():
                        opts = {
                            **base,
                            "channel": CHANNEL,
                            "subscribers": n,
                            "rate": rate,
                            "window": args.window,
                            "duration": args.duration,
                            "warmup": args.warmup,
                            "payload": 64,
                        }
                        result = load(opts)
                        rows.append((name, n, mode, result))
                        print(
                            f"  {name:<8} N={n:<5} {mode:<10} {result['deliveries_per_s']:>10.0f}/s "
                            f"p50 {result['p50_ms']:.1f} ms p99 {result['p99_ms']:.1f} ms",
                            flush=True,
                        )
            assert gw.proc is not None
            idle = {
                "gateway": idle_rss(
                    gw.proc.pid,
                    {**servers["gateway"], "channel": CHANNEL, "subscribers": args.idle},
                ),
                "node-ws": idle_rss(custom.pid, {**servers["node-ws"], "subscribers": args.idle}),
            }
        finally:
            os.killpg(custom.pid, signal.SIGTERM)
            custom.wait()
            gw.close()

    print(
        f"\n{'server':<9}{'subs':>6}  {'mode':<11}{'deliveries/s':>13}{'p50 ms':>9}{'p99 ms':>9}{'vs node-ws':>12}"
    )
    for name, n, mode, r in rows:
        base = next(
            b
            for b_name, b_n, b_mode, b in rows
            if b_name == "node-ws" and b_n == n and b_mode == mode
        )
        ratio = r["deliveries_per_s"] / base["deliveries_per_s"]
        print(
            f"{name:<9}{n:>6}  {mode:<11}{r['deliveries_per_s']:>13.0f}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}{ratio:>11.2f}x"
        )
    print(f"\nRSS per idle connection ({args.idle} connections, connected and subscribed):")
    for name, per in idle.items():
        print(f"  {name:<9}{per / 1024:8.1f} KB")


if __name__ == "__main__":
    main()
