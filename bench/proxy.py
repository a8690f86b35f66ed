"""Proxy benchmark: direct `next start` vs the gateway vs the seed-style Node custom server.

    .venv/bin/python bench/proxy.py [--duration 8] [--connections 32] [--rounds 2]

All three serve the same build of nextjs-app, on this machine, in one run. "direct" is the
gateway's own Next.js child, addressed on its loopback port, so both measure the same process.
Paths: a prerendered page (/about), an SSR page (/time), a /_next/static asset (served by the
gateway from memory), and an SSE stream (/api/sse), for which the number is the delay from Next
emitting an event to the client receiving it.

HTTP load comes from wrk (Debian package `wrk`) when installed, with `Accept-Encoding: gzip,
deflate, br` as a browser sends; each path is measured `--rounds` times, interleaving the three
servers, and the best round of each is reported (the machine is noisy; best-of is the least
disturbed). Without wrk, a small Python load generator is used and the output says so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.procs import ROOT, GatewayProcess, free_port, http_request

NEXT_DIR = ROOT / "nextjs-app"
ENV = {**os.environ, "NEXT_TELEMETRY_DISABLED": "1"}
ACCEPT = "gzip, deflate, br"


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            http_request(url, timeout=2)
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not answer within {timeout} s")


def parse_ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if m is None:
        return float("nan")
    return float(m[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m[2]]


def wrk(url: str, duration: int, connections: int, accept: str) -> Result:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-H",
            f"Accept-Encoding: {accept}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = parse_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = parse_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    if "Non-2xx" in out or "Socket errors" in out:
        print(f"  warning: {url}: {out.strip().splitlines()[-3:]}")
    return Result(rps, p50, p99)


async def _python_load(
    host: str, port: int, path: str, duration: int, connections: int, accept: str
) -> Result:
    latencies: list[float] = []
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept-Encoding: {accept}\r\n\r\n".encode()
    )
    deadline = time.monotonic() + duration

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        while time.monotonic() < deadline:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            latencies.append((time.perf_counter() - started) * 1000)
        writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    latencies.sort()
    return Result(
        len(latencies) / duration,
        latencies[len(latencies) // 2],
        latencies[int(len(latencies) * 0.99)],
    )


def load(url: str, duration: int, connections: int, accept: str = ACCEPT) -> Result:
    if shutil.which("wrk"):
        return wrk(url, duration, connections, accept)
    hostport, _, path = url[len("http://") :].partition("/")
    host, _, port = hostport.partition(":")
    return asyncio.run(_python_load(host, int(port), "/" + path, duration, connections, accept))


def sse_delays(base: str, events: int = 200, interval_ms: int = 10) -> list[float]:
    """Per-event delay in ms between Next stamping an event and this process reading it."""
    hostport = base[len("http://") :]
    host, _, port = hostport.partition(":")
    import http.client

    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", f"/api/sse?count={events}&interval={interval_ms}")
    resp = conn.getresponse()
    delays, buffer = [], b""
    while len(delays) < events:
        chunk = resp.read1(65536)
        if not chunk:
            break
        received = time.time() * 1000
        buffer += chunk
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            data = next(line for line in event.split(b"\n") if line.startswith(b"data: "))
            delays.append(received - json.loads(data[6:])["t"])
    conn.close()
    return delays


def start_custom_server() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            "node",
            str(ROOT / "bench" / "node" / "custom-server.js"),
            str(port),
            str(NEXT_DIR),
        ],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/about")
    return proc, base


def static_asset(base: str) -> str:
    html = http_request(base + "/")[2].decode()
    paths = sorted(set(re.findall(r'(/_next/static/chunks/[^"]+\.js)"', html)))
    sizes = {
        p: len(http_request(base + p, headers={"Accept-Encoding": "identity"})[2]) for p in paths
    }
    return sorted(paths, key=lambda p: sizes[p])[len(paths) // 2]  # a median-sized chunk


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if not (NEXT_DIR / ".next" / "BUILD_ID").exists():
        raise SystemExit("build the app first: make build")
    tool = "wrk -t2" if shutil.which("wrk") else "python asyncio load generator (wrk not installed)"
    print(f"load: {tool}, {args.connections} connections, {args.duration} s, best of {args.rounds}")

    with tempfile.TemporaryDirectory() as tmp:
        gw = GatewayProcess(
            Path(tmp), {"next": {"dir": str(NEXT_DIR)}, "log": {"level": "warning"}}
        )
        gw.start()
        custom, custom_base = start_custom_server()
        try:
            state = gw.wait_ready(60)
            time.sleep(1.0)  # let the static set (and its brotli forms) load
            servers = {
                "direct": f"http://127.0.0.1:{state['next']['port']}",
                "gateway": f"http://127.0.0.1:{gw.port}",
                "custom": custom_base,
            }
            asset = static_asset(servers["direct"])
            paths = {
                "prerendered /about": ("/about", ACCEPT),
                "prerendered /about, identity": ("/about", "identity"),
                "SSR /time": ("/time", ACCEPT),
                "static (median .js chunk)": (asset, ACCEPT),
            }
            for base in servers.values():  # warm every server and path
                for path, accept in paths.values():
                    load(base + path, 2, args.connections, accept)
            results: dict[str, dict[str, Result]] = {}
            for label, (path, accept) in paths.items():
                best: dict[str, Result] = {}
                for _ in range(args.rounds):
                    for name, base in servers.items():
                        r = load(base + path, args.duration, args.connections, accept)
                        if name not in best or r.rps > best[name].rps:
                            best[name] = r
                results[label] = best
            sse = {name: sse_delays(base) for name, base in servers.items()}
        finally:
            os.killpg(custom.pid, signal.SIGTERM)
            custom.wait()
            gw.close()

    print(f"\n{'path':<32}{'server':<9}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'vs direct':>11}")
    for label, best in results.items():
        for name in ("direct", "gateway", "custom"):
            r = best[name]
            ratio = r.rps / best["direct"].rps
            print(
                f"{label:<32}{name:<9}{r.rps:>9.0f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}{ratio:>10.2f}x"
            )
    print(f"\n{'SSE event delay (ms)':<32}{'server':<9}{'p50':>9}{'p99':>9}{'max':>9}")
    for name in ("direct", "gateway", "custom"):
        d = sorted(sse[name])
        p50, p99 = statistics.median(d), d[int(len(d) * 0.99)]
        print(f"{'':<32}{name:<9}{p50:>9.2f}{p99:>9.2f}{d[-1]:>9.2f}")
    gap = statistics.median(sse["gateway"]) - statistics.median(sse["direct"])
    print(f"SSE: gateway adds {gap:.2f} ms at the median")


if __name__ == "__main__":
    main()
