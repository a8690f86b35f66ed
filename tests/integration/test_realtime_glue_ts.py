"""The Next.js app's realtime glue (nextjs-app/lib/realtime: provider and React hooks), tested in
TypeScript: vitest runs nextjs-app/tests/realtime in jsdom against a gateway started here,
with the real centrifuge SDK over a real WebSocket. The glue's own contract: a reconnect does
not touch subscriptions, so the SDK recovers them; onGap when it cannot; the last user of a
channel unsubscribes.

The TypeScript tests read the gateway's address, API key and token secret from the environment
(GATEWAY_URL, GATEWAY_INTERNAL_URL, GATEWAY_API_KEY, WS_SECRET). To run them by hand against
a gateway of your own: `cd nextjs-app && GATEWAY_URL=... npx vitest run`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require
from support.procs import GatewayProcess, standin_command
from support.realtime import SECRET

API_KEY = "glue-api-key"
# What tests/realtime/harness.tsx expects of namespace `glue` (HISTORY_SIZE there).
GLUE_NAMESPACE = {
    "presence": True,
    "join_leave": True,
    "history_size": 5,
    "history_ttl": 300,
    "force_recovery": True,
    "allow_presence": True,
    "allow_history": True,
}


@pytest.fixture(scope="module")
def gw(next_deps: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    # No Next.js needed: the tests render the glue themselves and sign their own tokens.
    config = {
        "next": {"dir": ".", "command": standin_command()},
        "realtime": {"namespaces": {"glue": GLUE_NAMESPACE}},
    }
    env = {"WS_SECRET": SECRET, "GATEWAY_API_KEY": API_KEY}
    with GatewayProcess(tmp_path_factory.mktemp("glue"), config, env=env) as gateway:
        gateway.wait_ready()
        yield gateway


def test_realtime_glue_typescript_suite(
    gw: GatewayProcess, next_deps: Path, tmp_path: Path
) -> None:
    vitest = next_deps / "node_modules" / "vitest" / "vitest.mjs"
    require(vitest.is_file(), "vitest is not installed in nextjs-app", "make app-deps")
    node = shutil.which("node")
    assert node
    report = tmp_path / "vitest.json"
    origin = gw.url("/").rstrip("/")
    env = {
        **os.environ,
        "GATEWAY_URL": origin,
        "GATEWAY_INTERNAL_URL": origin,
        "GATEWAY_API_KEY": API_KEY,
        "WS_SECRET": SECRET,
        "NEXT_TELEMETRY_DISABLED": "1",
        "NO_COLOR": "1",  # plain text in a failure message
    }
    result = subprocess.run(
        [
            node,
            str(vitest),
            "run",
            "--reporter=default",
            "--reporter=json",
            f"--outputFile.json={report}",
        ],
        cwd=next_deps,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = f"{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, f"vitest exited with {result.returncode}:\n{output}"
    # Exit 0 is not enough: every test must have run and passed (none skipped, none todo).
    summary = json.loads(report.read_text())
    states = [
        test["status"] for suite in summary["testResults"] for test in suite["assertionResults"]
    ]
    assert states and set(states) == {"passed"}, f"{states}\n{output}"
    assert summary["numPassedTests"] >= 7, output
    print(output)  # the measurements the tests log, for -s / a failure elsewhere
