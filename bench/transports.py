"""Transports benchmark: fan-out over http_stream and SSE (bidirectional emulation) vs WebSocket.

    .venv/bin/python bench/transports.py [--duration 8] [--subs 1000] [--idle 2000] [--rounds 3]

The fan-out load of bench/fanout.py (one channel, --subs subscribers, one publisher, the Node
load generator bench/node/fanout-clients.mjs) against one gateway, with the subscribers on
each transport in turn: ``websocket``, ``http_stream`` (a chunked response of
newline-delimited JSON) and ``sse`` (``text/event-stream``, one event per flush). The
subscribers' token carries a ``channels`` claim, so every transport subscribes the same way
(server-side, at connect); the publisher is a WebSocket client publishing with the client
``publish`` command, as in fanout.py. Modes: saturation (--window publications in flight) and
a fixed 50,000 deliveries/s. Each run checks every subscriber's publications by sequence
number: after it, the publisher stops, the subscribers drain, and what never arrived is lost
(duplicates and disconnects are counted too). Rounds rotate the order of the transports; the
row shown is the median round (deliveries/s at saturation, p99 at a fixed rate); lost,
duplicated and disconnects are totals over all rounds. CPU: the gateway's from /proc and the
load generator's (both over the whole run, connects and drain included), per delivery.

Then RSS per idle connection for each transport: a fresh gateway, warmed by --idle / 4
connections of that transport held open (so that one-time costs, the first connections'
imports and caches, are not counted), then --idle more connected and subscribed (answering
pings), its RSS growth divided by their number (bench/node/idle-clients.mjs, as in fanout.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fanout import CHANNEL, NODE, ensure_node_modules, idle_rss, lift_fd_limit, load, start_gateway
from support.procs import GatewayProcess
from support.realtime import token
from workers import cpu_seconds

TRANSPORTS = ("websocket", "http_stream", "sse")


def client_options(gw: GatewayProcess, transport: str) -> dict[str, object]:
    return {
        "url": f"ws://127.0.0.1:{gw.port}/connection/websocket",
        "http": f"http://127.0.0.1:{gw.port}",
        "protocol": "centrifugo",
        "transport": transport,
        "token": token("bench-publisher", ttl=3600),
        "subscriberToken": token("bench", ttl=3600, channels=[CHANNEL]),
        "channel": CHANNEL,
    }


def held_connections(options: dict[str, object]) -> subprocess.Popen[str]:
    """Idle connections held open until the returned process's stdin is closed."""
    cmd = ["node", str(NODE / "idle-clients.mjs"), json.dumps(options)]
    pipe = subprocess.PIPE
    held = subprocess.Popen(cmd, stdin=pipe, stdout=pipe, text=True, preexec_fn=lift_fd_limit)
    assert held.stdout is not None and held.stdout.readline().startswith("ready")
    return held


def idle_rss_warm(gw: GatewayProcess, transport: str, n: int) -> float:
    """Bytes of RSS per idle connection of ``transport``, on top of n / 4 already open."""
    assert gw.proc is not None
    options = client_options(gw, transport)
    warm = held_connections({**options, "subscribers": max(100, n // 4)})
    try:
        return idle_rss(gw.proc.pid, {**options, "subscribers": n})
    finally:
        assert warm.stdin is not None
        warm.stdin.close()
        warm.wait(30)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measured_load(gw: GatewayProcess, options: dict[str, object]) -> dict[str, Any]:
    """One load run; adds the gateway's and the load generator's CPU: share of one core, and
    µs per publication received, over the whole run."""
    assert gw.proc is not None
    gw_before, load_before = cpu_seconds(gw.proc.pid), children_cpu()
    started = time.monotonic()
    result: dict[str, Any] = load(options)
    elapsed = time.monotonic() - started
    for who, seconds in (
        ("gateway", cpu_seconds(gw.proc.pid) - gw_before),
        ("load", children_cpu() - load_before),
    ):
        result[f"{who}_cpu"] = seconds / elapsed
        result[f"{who}_us"] = seconds / max(1, result["received"]) * 1e6
    return result


def median_round(results: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    if mode == "saturation":
        key = statistics.median_low(r["deliveries_per_s"] for r in results)
        return next(r for r in results if r["deliveries_per_s"] == key)
    key = statistics.median_low(r["p99_ms"] for r in results)
    return next(r for r in results if r["p99_ms"] == key)


def versions() -> str:
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    ws = (NODE / "node_modules" / "ws" / "package.json").read_text()
    ws_version = ws.split('"version":', 1)[1].split('"')[1]
    return f"Python {platform.python_version()}, Node {node.lstrip('v')}, ws {ws_version}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--subs", type=int, default=1000)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=int, default=2000)
    args = parser.parse_args()
    ensure_node_modules()
    lift_fd_limit()
    load_at_start = os.getloadavg()
    modes = (("saturation", 0.0), ("50k/s", 50_000 / args.subs))
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    idle: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        gw = start_gateway(Path(tmp))
        try:
            for round_no in range(args.rounds):
                order = TRANSPORTS[round_no % 3 :] + TRANSPORTS[: round_no % 3]
                for mode, rate in modes:
                    for transport in order:
                        result = measured_load(
                            gw,
                            {
                                **client_options(gw, transport),
                                "subscribers": args.subs,
                                "rate": rate,
                                "window": args.window,
                                "duration": args.duration,
                                "warmup": args.warmup,
                                "payload": 64,
                                "verify": True,
                            },
                        )
                        runs.setdefault((transport, mode), []).append(result)
                        print(
                            f"  round {round_no + 1} {transport:<12}{mode:<11}"
                            f"{result['deliveries_per_s']:>10.0f}/s p50 {result['p50_ms']:.1f} "
                            f"p99 {result['p99_ms']:.1f} ms lost {result['lost']} "
                            f"dup {result['duplicated']} disconnects {result['disconnects']}",
                            flush=True,
                        )
        finally:
            gw.close()
        for transport in TRANSPORTS:  # a fresh gateway each: no memory freed by the one before
            workdir = Path(tmp) / f"idle-{transport}"
            workdir.mkdir()
            gw = start_gateway(workdir)
            try:
                idle[transport] = idle_rss_warm(gw, transport, args.idle)
            finally:
                gw.close()
    load_at_end = os.getloadavg()

    print(
        f"\n{versions()}; load average {load_at_start[0]:.2f} at start, {load_at_end[0]:.2f} at "
        f"end; {args.subs} subscribers, {args.duration:g} s, median of {args.rounds} rounds"
    )
    print(
        f"{'transport':<13}{'mode':<11}{'deliveries/s':>13}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'vs ws':>7}{'gw CPU':>8}{'load CPU':>9}{'µs/deliv gw':>12}{'load':>6}{'lost':>6}"
        f"{'dup':>5}{'disc':>6}"
    )
    disconnects: list[str] = []
    for mode, _rate in modes:
        base = median_round(runs[("websocket", mode)], mode)
        for transport in TRANSPORTS:
            r = median_round(runs[(transport, mode)], mode)
            everything = runs[(transport, mode)]
            lost = sum(x["lost"] for x in everything)
            dup = sum(x["duplicated"] for x in everything)
            cut = sum(sum(x["disconnects"].values()) for x in everything)
            for i, x in enumerate(everything):
                for reason, n in x["disconnects"].items():
                    disconnects.append(f"  {transport} {mode} round {i + 1}: {n} x {reason}")
            print(
                f"{transport:<13}{mode:<11}{r['deliveries_per_s']:>13.0f}{r['p50_ms']:>8.1f}"
                f"{r['p99_ms']:>8.1f}{r['deliveries_per_s'] / base['deliveries_per_s']:>6.2f}x"
                f"{r['gateway_cpu'] * 100:>7.0f}%{r['load_cpu'] * 100:>8.0f}%"
                f"{r['gateway_us']:>12.2f}{r['load_us']:>6.2f}{lost:>6}{dup:>5}{cut:>6}"
            )
    print(
        "(CPU: percent of one core over the whole run; µs/deliv: CPU per publication received, "
        "gateway and load generator; lost, dup, disc: totals over all rounds)"
    )
    if disconnects:
        print("Disconnects (reason: close code, disconnect push code or socket error):")
        print("\n".join(disconnects))
    print(
        f"\nRSS per idle connection ({args.idle} connections, connected and subscribed, "
        f"after {max(100, args.idle // 4)} of the same transport):"
    )
    for transport, per in idle.items():
        print(f"  {transport:<13}{per / 1024:8.1f} KB")


if __name__ == "__main__":
    main()
