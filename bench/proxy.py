"""Proxy benchmark: the gateway in front of `next start` vs `next start` alone, in one run.

    .venv/bin/python bench/proxy.py [--duration 8] [--connections 32] [--rounds 3] [--custom]

"direct" is the gateway's own Next.js child addressed on its loopback port, so both setups
measure the same Next process; `--custom` adds the seed article's Node custom server
(bench/node/custom-server.js) as a third column.

Load comes from wrk (Debian package `wrk`, required), `-t1` by default so that wrk takes one of
the two cores, not both. Each path is measured `--rounds` times, the servers alternating within
a round; the table shows each server's median round, and "vs direct" is the median of the
per-round ratios (each from two runs seconds apart: the machine is noisy and its load drifts).
Paths, with `Accept-Encoding: gzip, deflate, br` as a browser sends unless the row says
identity:

- a prerendered page (/about), identity and as browsers ask;
- an SSR page (/time);
- a Server Action posted as a form (the /notes page's action, empty text: nothing is stored);
- a /_next/static JS chunk of about 110 KB (the gateway serves it from memory), both ways;
- the prerendered page again with the micro-cache on (`proxy.micro_cache.enabled`), both
  ways: a second gateway with the cache, in front of its own `next start` of the same build,
  against the same direct Next as the other rows (its "next" CPU is its own child's, ~0 on
  hits).

Per row, CPU per request: the user+system time of the gateway process and of the Next.js
child's process group (/proc/<pid>/stat) over the wrk run, divided by the requests wrk
completed. For direct rows the gateway is idle (its column shows ~0).

Then, without load: the SSE first-event delay (request sent on an open connection -> first
event decoded, /api/sse, as a browser asks) and the delay from Next stamping an event to the
client reading it (200 events 10 ms apart); and the bytes on the wire per page (response head
and body as sent, for the same request).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

try:
    import brotli
except ImportError:
    brotli = None

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.procs import ROOT, GatewayProcess, free_port, group_members, http_request

NEXT_DIR = ROOT / "nextjs-app"
ENV = {**os.environ, "NEXT_TELEMETRY_DISABLED": "1"}
ACCEPT = "gzip, deflate, br"
CHUNK_TARGET = 110 * 1024
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    gateway_cpu_ms: float  # per request
    next_cpu_ms: float  # per request


@dataclass
class Workload:
    """One row: a path, how it is asked for, and (for a POST) a wrk script per server."""

    path: str
    accept: str
    script: Callable[[str], str] | None = None
    cached: bool = False
    """Measured through the second gateway, the one with the micro-cache on."""


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


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of ``pids`` (those still alive), in seconds."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return total / TICK


class Meters:
    """Reads the CPU time of the gateway and of the Next.js child's process group."""

    def __init__(self, gateway_pid: int, next_pgid: int) -> None:
        self.gateway_pid = gateway_pid
        self.next_pgid = next_pgid

    def read(self) -> tuple[float, float, list[int]]:
        members = group_members(self.next_pgid)
        return cpu_seconds([self.gateway_pid]), cpu_seconds(members), members


def wrk(
    url: str, duration: int, connections: int, threads: int, accept: str, script: str | None
) -> tuple[float, float, float, int]:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    cmd += ["-H", f"Accept-Encoding: {accept}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        if script is not None:
            lua.write(script)
            lua.flush()
            cmd += ["-s", lua.name]
        out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = parse_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = parse_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    if "Non-2xx" in out or "Socket errors" in out:
        print(f"  warning: {url}: {out.strip().splitlines()[-3:]}")
    return rps, p50, p99, done


def measure(
    base: str, work: Workload, args: argparse.Namespace, meters: Meters, duration: int
) -> Result:
    script = work.script(base) if work.script else None
    gw0, next0, members0 = meters.read()
    rps, p50, p99, done = wrk(
        base + work.path, duration, args.connections, args.threads, work.accept, script
    )
    gw1, next1, members1 = meters.read()
    # A process of the child's group that ended during the run takes its time with it; the
    # child's group does not change in a steady run, which is all this reads.
    if members0 != members1:
        print(f"  note: the Next.js process group changed during {work.path}")
    per = 1000 / max(done, 1)
    return Result(rps, p50, p99, done, (gw1 - gw0) * per, (next1 - next0) * per)


def lua_string(data: bytes) -> str:
    return '"' + "".join(f"\\{b}" for b in data) + '"'


def action_script(action_field: str) -> Callable[[str], str]:
    """A wrk script posting the /notes form to its Server Action, from the server's own origin
    (Next refuses an action whose Origin is not the host it was sent to)."""
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{action_field}"\r\n\r\n\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="text"\r\n\r\n\r\n'
        f"--{boundary}--\r\n"
    ).encode()

    def script(base: str) -> str:
        return "\n".join(
            [
                'wrk.method = "POST"',
                f"wrk.body = {lua_string(body)}",
                f'wrk.headers["Content-Type"] = "multipart/form-data; boundary={boundary}"',
                f'wrk.headers["Origin"] = "{base}"',
                'wrk.headers["Accept"] = "text/html"',
            ]
        )

    return script


def start_custom_server() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        ["node", str(ROOT / "bench" / "node" / "custom-server.js"), str(port), str(NEXT_DIR)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/about")
    return proc, base


def static_chunk(base: str) -> tuple[str, int]:
    """The /_next/static JS chunk (of those the pages load) closest to 110 KB, and its size."""
    paths: set[str] = set()
    for page in ("/", "/about", "/chat", "/time", "/notes", "/stream", "/live"):
        html = http_request(base + page)[2].decode()
        paths.update(re.findall(r'(/_next/static/chunks/[^"]+\.js)"', html))
    sizes = {
        p: len(http_request(base + p, headers={"Accept-Encoding": "identity"})[2]) for p in paths
    }
    chosen = min(sizes, key=lambda p: abs(sizes[p] - CHUNK_TARGET))
    return chosen, sizes[chosen]


class Decoder:
    """Decodes a response body as it arrives (gzip, deflate, br or identity)."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding.strip().lower()
        self.z = None
        self.br = None
        if self.encoding == "gzip":
            self.z = zlib.decompressobj(wbits=31)
        elif self.encoding == "deflate":
            self.z = zlib.decompressobj()
        elif self.encoding == "br":
            if brotli is None:
                raise SystemExit("a brotli response needs the brotli package")
            self.br = brotli.Decompressor()
        elif self.encoding not in ("", "identity"):
            raise SystemExit(f"unknown Content-Encoding {encoding!r}")

    def feed(self, data: bytes) -> bytes:
        if self.z is not None:
            return self.z.decompress(data)
        if self.br is not None:
            return bytes(self.br.process(data))
        return data


def open_conn(base: str) -> http.client.HTTPConnection:
    host, _, port = base[len("http://") :].partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def sse_first_event_ms(base: str) -> float:
    """From sending the request on an open connection to the first event, decoded."""
    conn = open_conn(base)
    try:
        started = time.perf_counter()
        conn.request(
            "GET",
            "/api/sse?count=2&interval=20",
            headers={"Accept": "text/event-stream", "Accept-Encoding": ACCEPT},
        )
        resp = conn.getresponse()
        decoder, text = Decoder(resp.headers.get("Content-Encoding", "")), b""
        while b"\n\n" not in text:
            chunk = resp.read1(65536)
            if not chunk:
                raise SystemExit(f"{base}: the SSE stream ended before its first event")
            text += decoder.feed(chunk)
        return (time.perf_counter() - started) * 1000
    finally:
        conn.close()


def sse_delays(base: str, events: int = 200, interval_ms: int = 10) -> list[float]:
    """Per-event delay in ms between Next stamping an event and this process reading it."""
    conn = open_conn(base)
    conn.request(
        "GET",
        f"/api/sse?count={events}&interval={interval_ms}",
        headers={"Accept": "text/event-stream", "Accept-Encoding": ACCEPT},
    )
    resp = conn.getresponse()
    decoder = Decoder(resp.headers.get("Content-Encoding", ""))
    delays, buffer = [], b""
    while len(delays) < events:
        chunk = resp.read1(65536)
        if not chunk:
            break
        received = time.time() * 1000
        buffer += decoder.feed(chunk)
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            data = next(line for line in event.split(b"\n") if line.startswith(b"data: "))
            delays.append(received - json.loads(data[6:])["t"])
    conn.close()
    return delays


def wire(base: str, path: str) -> tuple[int, int, str, bytes]:
    """One GET as a browser asks, on a raw socket: head bytes, body bytes (as framed on the
    wire), Content-Encoding, and the decoded body."""
    host, _, port = base[len("http://") :].partition(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/html\r\n"
            f"Accept-Encoding: {ACCEPT}\r\nConnection: close\r\n\r\n".encode()
        )
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    headers = {
        k.strip().lower(): v.strip()
        for k, _, v in (line.decode("latin-1").partition(":") for line in head.split(b"\r\n")[1:])
    }
    framed = body
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body, rest = b"", framed
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            body, rest = body + rest[:size], rest[size + 2 :]
    encoding = headers.get("content-encoding", "identity")
    return len(head) + 4, len(framed), encoding, Decoder(encoding).feed(body)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def median_result(results: list[Result]) -> Result:
    """The round with the median req/s (its latencies and CPU belong to that same round)."""
    ordered = sorted(results, key=lambda r: r.rps)
    return ordered[len(ordered) // 2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--custom", action="store_true", help="also the Node custom server")
    parser.add_argument("--only", default="", help="comma-separated row labels (substrings)")
    args = parser.parse_args()
    if not (NEXT_DIR / ".next" / "BUILD_ID").exists():
        raise SystemExit("build the app first: make build")
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    print(
        f"load: wrk -t{args.threads}, {args.connections} connections, {args.duration} s per run,"
        f" {args.rounds} rounds alternating; load average before: {load_average()}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        gw = GatewayProcess(
            Path(tmp), {"next": {"dir": str(NEXT_DIR)}, "log": {"level": "warning"}}
        )
        gw.start()
        (Path(tmp) / "cached").mkdir()
        cached_gw = GatewayProcess(
            Path(tmp) / "cached",
            {
                "next": {"dir": str(NEXT_DIR)},
                "log": {"level": "warning"},
                "proxy": {"micro_cache": {"enabled": True}},
            },
        )
        cached_gw.start()
        custom = None
        try:
            state = gw.wait_ready(60)
            assert gw.proc is not None
            next_pid = int(state["next"]["pid"])
            meters = Meters(gw.proc.pid, os.getpgid(next_pid))
            cached_state = cached_gw.wait_ready(60)
            assert cached_gw.proc is not None
            cached_meters = Meters(cached_gw.proc.pid, os.getpgid(int(cached_state["next"]["pid"])))
            cached_base = f"http://127.0.0.1:{cached_gw.port}"
            servers = {
                "direct": f"http://127.0.0.1:{state['next']['port']}",
                "gateway": f"http://127.0.0.1:{gw.port}",
            }
            if args.custom:
                custom, servers["custom"] = start_custom_server()
            time.sleep(1.0)  # let the static set (and its brotli forms) load
            chunk, chunk_size = static_chunk(servers["direct"])
            notes = http_request(servers["direct"] + "/notes")[2]
            m = re.search(rb'name="(\$ACTION_ID_[0-9a-f]+)"', notes)
            if m is None:
                raise SystemExit("the /notes page has no Server Action form")
            chunk_label = f"static {chunk_size // 1024} KB .js"
            workloads = {
                "prerendered /about, identity": Workload("/about", "identity"),
                "prerendered /about": Workload("/about", ACCEPT),
                "SSR /time": Workload("/time", ACCEPT),
                "Server Action POST /notes": Workload(
                    "/notes", ACCEPT, action_script(m[1].decode())
                ),
                f"{chunk_label}, identity": Workload(chunk, "identity"),
                chunk_label: Workload(chunk, ACCEPT),
                "prerendered cached, identity": Workload("/about", "identity", cached=True),
                "prerendered cached": Workload("/about", ACCEPT, cached=True),
            }
            if args.only:
                wanted = args.only.split(",")
                workloads = {k: v for k, v in workloads.items() if any(w in k for w in wanted)}

            def servers_of(work: Workload) -> dict[str, tuple[str, Meters]]:
                if work.cached:
                    return {
                        "direct": (servers["direct"], meters),
                        "gateway": (cached_base, cached_meters),
                    }
                return {name: (base, meters) for name, base in servers.items()}

            for work in workloads.values():  # warm every server and path
                for base, meter in servers_of(work).values():
                    measure(base, work, args, meter, 2)
                if work.cached:
                    hit = http_request(cached_base + work.path)[1].get("X-Gateway-Cache")
                    if hit != "HIT":
                        print(f"  warning: {work.path} is not a micro-cache hit ({hit})")
            rounds: dict[str, dict[str, list[Result]]] = {
                label: {name: [] for name in servers_of(work)} for label, work in workloads.items()
            }
            for _ in range(args.rounds):
                for label, work in workloads.items():
                    for name, (base, meter) in servers_of(work).items():
                        result = measure(base, work, args, meter, args.duration)
                        rounds[label][name].append(result)
            first: dict[str, list[float]] = {name: [] for name in servers}
            for _ in range(30):
                for name, base in servers.items():
                    first[name].append(sse_first_event_ms(base))
            sse = {name: sse_delays(base) for name, base in servers.items()}
            pages = {
                path: {name: wire(base, path) for name, base in servers.items()}
                for path in ("/about", "/time", "/notes")
            }
        finally:
            if custom is not None:
                os.killpg(custom.pid, signal.SIGTERM)
                custom.wait()
            cached_gw.close()
            gw.close()

    names = list(servers)
    print(f"load average after: {load_average()}; static chunk: {chunk} ({chunk_size} B)")
    print(
        f"\n{'path':<32}{'server':<9}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'cpu ms/req: gw':>16}{'next':>7}{'sum':>7}{'vs direct':>11}"
    )
    per_round: dict[str, str] = {}
    for label, by_server in rounds.items():
        per_round[label] = ", ".join(
            f"{g.rps / d.rps:.2f}"
            for g, d in zip(by_server["gateway"], by_server["direct"], strict=True)
        )
        for name in [n for n in names if n in by_server]:
            r = median_result(by_server[name])
            # The median of the ratios of each round (the two runs were seconds apart), not the
            # ratio of the medians: the load from other work on the box drifts between rounds.
            ratio = statistics.median(
                mine.rps / d.rps
                for mine, d in zip(by_server[name], by_server["direct"], strict=True)
            )
            print(
                f"{label:<32}{name:<9}{r.rps:>8.0f}{r.p50_ms:>8.2f}{r.p99_ms:>8.2f}"
                f"{r.gateway_cpu_ms:>16.3f}{r.next_cpu_ms:>7.3f}"
                f"{r.gateway_cpu_ms + r.next_cpu_ms:>7.3f}{ratio:>10.2f}x"
            )
    print("\ngateway/direct per round:")
    for label, ratios in per_round.items():
        print(f"  {label:<30}{ratios}")

    print(f"\n{'SSE (ms)':<32}{'server':<9}{'p50':>8}{'p99':>8}{'max':>8}")
    for name in names:
        d = sorted(first[name])
        print(
            f"{'first event, 30 requests':<32}{name:<9}{statistics.median(d):>8.2f}{'':>8}{d[-1]:>8.2f}"
        )
    for name in names:
        d = sorted(sse[name])
        p50, p99 = statistics.median(d), d[int(len(d) * 0.99)]
        print(f"{'event delay, 200 events':<32}{name:<9}{p50:>8.2f}{p99:>8.2f}{d[-1]:>8.2f}")
    gap_first = statistics.median(first["gateway"]) - statistics.median(first["direct"])
    gap = statistics.median(sse["gateway"]) - statistics.median(sse["direct"])
    print(f"SSE: gateway adds {gap_first:.2f} ms to the first event, {gap:.2f} ms per event")

    print(f"\n{'bytes on the wire':<32}{'server':<9}{'head':>8}{'body':>8}{'total':>8}  encoding")
    for path, by_server in pages.items():
        for name in names:
            head, body, encoding, _ = by_server[name]
            print(f"{path:<32}{name:<9}{head:>8}{body:>8}{head + body:>8}  {encoding}")
        ratio = sum(by_server["gateway"][:2]) / sum(by_server["direct"][:2])
        print(f"{'':<32}gateway/direct total: {ratio:.2f}x")
    about = pages["/about"]
    if about["gateway"][3] != about["direct"][3]:
        print("warning: /about decodes to different bytes through the gateway")


if __name__ == "__main__":
    main()
