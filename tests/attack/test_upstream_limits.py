"""How many connections the gateway opens to the child, under more clients than it allows."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from support.procs import GatewayProcess, standin_command


def limited_gateway(tmp: Any, queue_timeout: float) -> GatewayProcess:
    config = {
        "next": {"dir": ".", "command": standin_command()},
        "proxy": {"max_connections": 2, "queue_timeout": queue_timeout},
    }
    return GatewayProcess(tmp, config)


@pytest.fixture
def patient(tmp_path: Any) -> Iterator[GatewayProcess]:
    with limited_gateway(tmp_path, queue_timeout=10) as gw:
        gw.wait_ready()
        yield gw


@pytest.fixture
def impatient(tmp_path: Any) -> Iterator[GatewayProcess]:
    with limited_gateway(tmp_path, queue_timeout=0.3) as gw:
        gw.wait_ready()
        yield gw


def slow_requests(gw: GatewayProcess, count: int) -> list[tuple[int, float]]:
    def one(_: int) -> tuple[int, float]:
        started = time.monotonic()
        status, _, _ = gw.request("/slow?s=1", timeout=20)
        return status, time.monotonic() - started

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def test_requests_beyond_the_limit_wait_for_a_connection(patient: GatewayProcess) -> None:
    results = slow_requests(patient, 4)
    assert [status for status, _ in results] == [200] * 4
    durations = sorted(seconds for _, seconds in results)
    assert durations[1] < 1.8 and durations[3] > 1.9  # two at a time: two rounds of 1 s
    state = patient.ready_state()
    assert state is not None and state["pool"]["opened"] <= 2
    assert state["pool"]["in_use"] == 0 and state["pool"]["waiting"] == 0


def test_a_request_that_waits_too_long_gets_503(impatient: GatewayProcess) -> None:
    results = slow_requests(impatient, 3)
    statuses = sorted(status for status, _ in results)
    assert statuses == [200, 200, 503]
    refused = next(seconds for status, seconds in results if status == 503)
    assert refused < 0.9  # after the 0.3 s queue timeout, not after a slot came free
    state = impatient.ready_state()
    assert state is not None and state["pool"]["refused_busy"] == 1
    assert "Traceback" not in impatient.log
