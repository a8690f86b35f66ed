"""Scaling benchmark: one worker (memory engine), one worker (Redis), two workers (Redis).

    .venv/bin/python bench/workers.py [--subscribers 1000] [--duration 8]

The fan-out load of bench/fanout.py (one channel, N subscribers, one publisher, the Node load
generator bench/node/fanout-clients.mjs), against the gateway in three set-ups, in one run, with
a redis-server of the benchmark's own (on a free port, no persistence). With two workers the
kernel spreads the subscribers over both (SO_REUSEPORT); the publisher's publications reach the
other worker through Redis pub/sub. Reported: deliveries/s and latency at saturation and at a
fixed 50,000 deliveries/s, and the CPU Redis used (percent of one core) during each run.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fanout import CHANNEL, ensure_node_modules, lift_fd_limit, load
from support.procs import GatewayProcess, standin_command
from support.realtime import SECRET, token
from support.redis import RedisServer


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, in clock ticks


def gateway_pids(gw: GatewayProcess) -> list[int]:
    """The processes that serve: the gateway itself, or its workers."""
    assert gw.proc is not None
    workers = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == gw.proc.pid and b"_worker" in cmd:
                workers.append(int(entry.name))
    return workers or [gw.proc.pid]


def gateway(tmp: Path, engine: dict[str, object], workers: int) -> GatewayProcess:
    config = {
        "next": {"dir": ".", "command": standin_command()},
        "log": {"level": "warning"},
        "server": {"workers": workers},
        "engine": engine,
        "realtime": {
            "command_rate": 1_000_000,
            "command_burst": 1_000_000,
            "write_queue_max_bytes": 16 * 1024 * 1024,
            "namespaces": {"bench": {"allow_publish": True}},
        },
    }
    gw = GatewayProcess(tmp, config, env={"WS_SECRET": SECRET})
    gw.start_ready(30)
    try:
        seen: set[str] = set()
        deadline = time.monotonic() + 20
        while workers > 1 and len(seen) < workers:  # every worker answers on the port
            state = gw.ready_state() or {}
            seen.add(str(state.get("worker", {}).get("id")))
            assert time.monotonic() < deadline, gw.log
            time.sleep(0.05)
    except BaseException:  # not handed to the caller: stop it here, leave nothing running
        gw.close()
        raise
    return gw


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--window", type=int, default=64)
    args = parser.parse_args()
    ensure_node_modules()
    lift_fd_limit()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        with RedisServer(Path(tmp)) as redis:
            assert redis.proc is not None
            setups = [
                ("1 worker, memory", {"kind": "memory"}, 1),
                ("1 worker, Redis", {"kind": "redis", "redis_url": redis.url}, 1),
                ("2 workers, Redis", {"kind": "redis", "redis_url": redis.url}, 2),
            ]
            for i, (label, engine, workers) in enumerate(setups):
                workdir = Path(tmp) / str(i)
                workdir.mkdir()
                gw = gateway(workdir, engine, workers)
                try:
                    modes = (
                        ("saturation", 0, args.window),  # bursts: coalesced frames
                        ("one-by-one", 0, 1),  # one publication in flight: no coalescing
                        ("50k/s", 50_000 / args.subscribers, args.window),
                    )
                    pids = gateway_pids(gw)
                    for mode, rate, window in modes:
                        before = cpu_seconds(redis.proc.pid)
                        gw_before = sum(cpu_seconds(p) for p in pids)
                        load_before = resource.getrusage(resource.RUSAGE_CHILDREN)
                        started = time.monotonic()
                        result = load(
                            {
                                "url": f"ws://127.0.0.1:{gw.port}/connection/websocket",
                                "protocol": "centrifugo",
                                "token": token("bench", ttl=3600),
                                "channel": CHANNEL,
                                "subscribers": args.subscribers,
                                "rate": rate,
                                "window": window,
                                "duration": args.duration,
                                "warmup": 2.0,
                                "payload": 64,
                            }
                        )
                        elapsed = time.monotonic() - started
                        redis_cpu = (cpu_seconds(redis.proc.pid) - before) / elapsed
                        gw_cpu = (sum(cpu_seconds(p) for p in pids) - gw_before) / elapsed
                        load_after = resource.getrusage(resource.RUSAGE_CHILDREN)
                        load_cpu = (
                            load_after.ru_utime
                            + load_after.ru_stime
                            - load_before.ru_utime
                            - load_before.ru_stime
                        ) / elapsed
                        result["gateway_cpu"] = gw_cpu
                        result["load_cpu"] = load_cpu
                        rows.append((label, mode, result, redis_cpu))
                        print(
                            f"  {label:<18} {mode:<10} {result['deliveries_per_s']:>10.0f}/s "
                            f"p50 {result['p50_ms']:.1f} p99 {result['p99_ms']:.1f} ms "
                            f"redis {redis_cpu * 100:.0f}%",
                            flush=True,
                        )
                finally:
                    gw.close()

    print(
        f"\n{'set-up':<19}{'mode':<11}{'deliveries/s':>13}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'gateway CPU':>12}{'load CPU':>10}{'redis CPU':>10}{'µs CPU/deliv':>13}{'vs 1 worker':>12}"
    )
    for label, mode, r, cpu in rows:
        one = next(x for lab, m, x, _ in rows if lab == "1 worker, Redis" and m == mode)
        ratio = r["deliveries_per_s"] / one["deliveries_per_s"]
        per = r["gateway_cpu"] / r["deliveries_per_s"] * 1e6
        print(
            f"{label:<19}{mode:<11}{r['deliveries_per_s']:>13.0f}{r['p50_ms']:>8.1f}{r['p99_ms']:>8.1f}"
            f"{r['gateway_cpu'] * 100:>11.0f}%{r['load_cpu'] * 100:>9.0f}%{cpu * 100:>9.0f}%"
            f"{per:>13.2f}{ratio:>11.2f}x"
        )
    print("(CPU in percent of one core; vs 1 worker: against '1 worker, Redis', the same engine)")


if __name__ == "__main__":
    main()
