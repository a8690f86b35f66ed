"""Fossil delta cost and gain (gateway/realtime/fossil.py).

    .venv/bin/python bench/fossil.py [--runs 2000]

For a JSON document republished with one value changed (2 KB, and 64 KB), and for 2 KB of new
bytes with nothing in common with the old ones (the slow path: the window slides over every
byte): the delta's size against the full payload, both raw and as the ``data`` of a JSON
publication (a JSON string, escapes included), and the time to create and to apply it. The
baseline in the same run: ``json.dumps`` of the same document, what publishing it costs anyway.
Times are the median of --runs calls, in microseconds, on this machine.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gateway.realtime import fossil


def document(items: int, seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    return {
        "board": "ops",
        "rev": 41,
        "items": [
            {
                "id": i,
                "title": rng.choice(["deploy", "rollback", "Zoë's review", "status 🟢"]),
                "price": round(rng.random() * 1000, 2),
                "qty": rng.randrange(100),
                "tags": ["x", "y"][: rng.randrange(3)],
            }
            for i in range(items)
        ],
    }


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def median_us(call: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


def report(name: str, doc: Any, source: bytes, target: bytes, runs: int) -> None:
    delta = fossil.create(source, target)
    assert fossil.apply(source, delta) == target
    # On the wire a delta subscription's data is a JSON string, a plain one's a JSON value.
    wire_delta = len(json.dumps(delta.decode(), ensure_ascii=False).encode())
    wire_string = len(json.dumps(target.decode(), ensure_ascii=False).encode())
    create_us = median_us(lambda: fossil.create(source, target), runs)
    apply_us = median_us(lambda: fossil.apply(source, delta), runs)
    dumps_us = median_us(lambda: dumps(doc), runs)
    print(f"{name}:")
    print(
        f"  size    data {len(target)} B, delta {len(delta)} B "
        f"({100 * len(delta) / len(target):.2f} % of the data)"
    )
    print(
        f"  wire    delta {wire_delta} B; full data {len(target)} B as a JSON value, "
        f"{wire_string} B as the JSON string a delta subscription gets"
    )
    print(
        f"  time    create {create_us:.1f} us, apply {apply_us:.1f} us "
        f"(baseline: json.dumps of the document {dumps_us:.1f} us)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    runs = parser.parse_args().runs

    for items, name in ((30, "2 KB, one value changed"), (900, "64 KB, one value changed")):
        doc = document(items)
        source = dumps(doc)
        doc["items"][items // 2]["price"] = 12.5
        report(name, doc, source, dumps(doc), runs)

    # Nothing in common: centrifuge (and the caller) would send this one full.
    other = {"blob": random.Random(2).randbytes(1010).hex()}
    report("2 KB, all new", other, dumps(document(30)), dumps(other), max(1, runs // 4))


if __name__ == "__main__":
    main()
