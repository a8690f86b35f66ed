"""Deploy benchmark: `gateway reload` (zero-downtime) vs a plain restart, under load, with a
real `next start`.

    .venv/bin/python bench/deploy.py [--interval 15] [--subscribers 200] [--rate 50]

Releases: the bundled app as built by `make build` is release 0; releases 1-3 are copies of its
sources (node_modules hard-linked) whose /about says "release N" (from a client component, so
each also has a chunk of its own), each built with `next build` once and cached under
.cache/next-variants by a hash of the sources (tests/support/next_builds.py; ~15 s each). They
share one NEXT_SERVER_ACTIONS_ENCRYPTION_KEY, as a deploy should; release 0 has the random
key of its own build, so an open page of release 0 posting a Server Action to release 1 shows
what happens without it. `next.dir` is a `current` symlink to the release being served.

Load, the whole time, in this process and one Node process: /about (prerendered; every answer
says which release served it), /time (rendered per request), the /notes page and its Server
Action posted as a form, a "stale tab" posting the Server Action id it read once (as React
does; it reads the page again after a failure), /api/sse streams of 20 events, and 200
WebSocket subscribers of a recoverable channel (history + force_recovery) receiving 50
publications/s from the server API (bench/node/deploy-subscribers.mjs: every subscriber must
hold every acknowledged publication once, in offset order).

Phase "reload": three deploys `--interval` s apart, each: point `current` at the next release
(`ln -sfn` + `mv -T`, atomically) and run `python -m gateway reload --port N`. Phase "restart":
the same three deploys done by stopping the gateway (SIGTERM) and starting it again, as
`supervisorctl restart gateway` does. Counted for each: non-2xx, connection errors, SSE streams
cut, WebSocket disconnects by code, publications lost/duplicated/reordered, time from the deploy
command to /about answering with the new release, p99 of HTTP requests in the switch windows
(the deploy command to 2 s after the new release first answered) vs the rest after warm-up, and
whether /_next/static chunks of earlier releases still load (static.keep_builds).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import http.client
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.next_builds import BuildFailed, cached_build, link_node_modules
from support.procs import ROOT, GatewayProcess, pid_alive
from support.realtime import SECRET, token

NEXT_DIR = ROOT / "nextjs-app"
NODE = ROOT / "bench" / "node"
API_KEY = "deploy-bench-api-key"
CHANNEL = "deploy:feed"
RELEASES = 3
# One key for every release built here (what NEXT_SERVER_ACTIONS_ENCRYPTION_KEY from a secret
# store does in a real deploy): Server Action ids stay valid from one release to the next.
ACTION_KEY = base64.b64encode(hashlib.sha256(b"gateway deploy bench").digest()).decode()
ABOUT_MARK = "<h1>About</h1>"
RELEASE_RE = re.compile(rb'<p id="release">release (\d+)</p>')
# The switch window ends this long after the new release first answered /about: the new
# child's first requests (cold routes) belong to the deploy, not to the steady state.
WINDOW_TAIL = 2.0


# -- releases ---------------------------------------------------------------------------------


def mark_release(work: Path, number: int) -> None:
    """/about says which release it is, prerendered, from a client component: the release then
    also has a /_next/static chunk of its own (for the skew check)."""
    link_node_modules(work)
    about = work / "app" / "about" / "page.tsx"
    text = about.read_text()
    if ABOUT_MARK not in text:
        raise SystemExit(f"{about}: no {ABOUT_MARK} to mark the release after (update bench)")
    (about.parent / "release.tsx").write_text(
        '"use client";\n\n'
        f'export default function Release() {{\n  return <p id="release">release {number}</p>;\n}}\n'
    )
    text = text.replace(ABOUT_MARK, f"{ABOUT_MARK}\n      <Release />", 1)
    about.write_text('import Release from "./release";\n\n' + text)


def releases() -> list[Path]:
    """Release 0 (nextjs-app as `make build` left it) and releases 1..RELEASES, built once and
    cached under .cache/next-variants (tests/support/next_builds.py)."""
    out = [NEXT_DIR]
    for n in range(1, RELEASES + 1):
        started = time.monotonic()
        try:
            path = cached_build(
                f"deploy-release-{n}",
                f"about says release {n}; server actions key {ACTION_KEY}",
                lambda work, n=n: mark_release(work, n),
                env={"NEXT_SERVER_ACTIONS_ENCRYPTION_KEY": ACTION_KEY},
            )
        except BuildFailed as e:
            raise SystemExit(str(e)) from None
        if time.monotonic() - started > 2:
            print(f"  built release {n} in {time.monotonic() - started:.0f} s: {path}", flush=True)
        out.append(path)
    return out


def point(link: Path, target: Path) -> None:
    """`ln -sfn target link.tmp && mv -T link.tmp link`: the link never misses."""
    tmp = link.with_name(link.name + ".tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def chunks_of(release: Path) -> set[str]:
    static = release / ".next" / "static"
    return {"/_next/static/" + str(p.relative_to(static)) for p in static.rglob("*.js")}


def unique_chunk(releases: list[Path], n: int) -> str | None:
    """A script of release ``n`` that no other release has: one its prerendered /about loads if
    there is one (releases 1-3), else any (release 0: its /about's chunks are all in the others
    too, content-hashed names of the same code)."""
    html = (releases[n] / ".next" / "server" / "app" / "about.html").read_text()
    others = set().union(*(chunks_of(r) for i, r in enumerate(releases) if i != n))
    mine = sorted(chunks_of(releases[n]) - others, key=lambda u: ("/chunks/" not in u, u))
    loaded = [u for u in mine if f'"{u}"' in html]
    return (loaded or mine)[0] if mine else None


def action_id(release: Path) -> str:
    manifest = json.loads(
        (release / ".next" / "server" / "server-reference-manifest.json").read_text()
    )
    found: str = next(
        k for k, v in manifest["node"].items() if v["filename"] == "app/notes/actions.ts"
    )
    return found


# -- HTTP load --------------------------------------------------------------------------------


@dataclass
class Sample:
    kind: str
    started: float  # wall clock, seconds
    latency: float  # seconds to the whole response (an SSE stream: its 2 s when on time)
    status: int  # 0: no response (see error)
    error: str = ""
    release: int | None = None  # /about: the release that answered

    @property
    def ended(self) -> float:
        return self.started + self.latency


def error_kind(e: BaseException) -> str:
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(e, http.client.IncompleteRead):
        return "cut"
    if isinstance(e, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
        return "closed"
    return type(e).__name__


def multipart(fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in fields.items()
    )
    return (body + f"--{boundary}--\r\n").encode(), f"multipart/form-data; boundary={boundary}"


class Client(threading.Thread):
    """One keep-alive connection (a new one after an error), ``rate`` iterations a second."""

    def __init__(self, port: int, rate: float, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.interval = 1.0 / rate
        self.stop = stop
        self.samples: list[Sample] = []
        self.conn: http.client.HTTPConnection | None = None
        self.origin = f"http://127.0.0.1:{port}"

    def request(
        self,
        kind: str,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        check: Callable[[http.client.HTTPResponse, bytes], dict[str, Any]] | None = None,
    ) -> tuple[Sample, bytes]:
        started, t0 = time.time(), time.perf_counter()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
            self.conn.request(method, path, body=body, headers=headers or {})
            resp = self.conn.getresponse()
            data = resp.read()
            if resp.getheader("Content-Encoding") == "gzip":
                data = gzip.decompress(data)
            sample = Sample(kind, started, time.perf_counter() - t0, resp.status)
            if check is not None:
                for k, v in check(resp, data).items():
                    setattr(sample, k, v)
            if resp.will_close:
                self.conn.close()
                self.conn = None
        except (OSError, http.client.HTTPException) as e:
            sample = Sample(kind, started, time.perf_counter() - t0, 0, error_kind(e))
            data = b""
            if self.conn is not None:
                self.conn.close()
            self.conn = None
        self.samples.append(sample)
        return sample, data

    def iteration(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        due = time.monotonic()
        while not self.stop.is_set():
            self.iteration()
            due = max(due + self.interval, time.monotonic() - 1.0)  # no burst after an outage
            self.stop.wait(max(0.0, due - time.monotonic()))
        if self.conn is not None:
            self.conn.close()


def about_release(_resp: http.client.HTTPResponse, body: bytes) -> dict[str, Any]:
    m = RELEASE_RE.search(body)
    return {"release": int(m[1]) if m else 0} if b"<h1>About</h1>" in body else {}


class AboutClient(Client):
    def iteration(self) -> None:
        self.request(
            "about", "GET", "/about", headers={"Accept-Encoding": "gzip"}, check=about_release
        )


class TimeClient(Client):
    def iteration(self) -> None:
        self.request("time", "GET", "/time", headers={"Accept-Encoding": "gzip"})


class FormActionClient(Client):
    """A browser without JavaScript: load /notes, post its form (the Server Action)."""

    def iteration(self) -> None:
        sample, page = self.request("notes", "GET", "/notes", headers={"Accept-Encoding": "gzip"})
        m = re.search(rb'name="\$ACTION_ID_([0-9a-f]+)"', page)
        if sample.status != 200 or m is None:
            return
        body, ctype = multipart({f"$ACTION_ID_{m[1].decode()}": "", "text": "deploy bench"})
        headers = {"Origin": self.origin, "Content-Type": ctype, "Accept": "text/html"}
        self.request("action", "POST", "/notes", body=body, headers=headers)


class StaleTabClient(Client):
    """A tab with React loaded: posts the action id its page had, reads the page again only
    after a failure (a user reloading). Its failures are Next's skew, reported apart."""

    action: str | None = None

    def iteration(self) -> None:
        if self.action is None:
            sample, page = self.request("stale-page", "GET", "/notes")
            m = re.search(rb'name="\$ACTION_ID_([0-9a-f]+)"', page)
            self.action = m[1].decode() if m else None
            return
        body, ctype = multipart({"_1_text": "stale tab", "0": '["$K1"]'})
        headers = {
            "Origin": self.origin,
            "Content-Type": ctype,
            "Next-Action": self.action,
            "Accept": "text/x-component",
        }
        sample, _ = self.request("stale-action", "POST", "/notes", body=body, headers=headers)
        if sample.status != 200:
            self.action = None


EVENTS = 20


def sse_complete(_resp: http.client.HTTPResponse, body: bytes) -> dict[str, Any]:
    ids = re.findall(rb"^id: (\d+)$", body, re.M)
    return {} if ids == [str(i).encode() for i in range(EVENTS)] else {"error": "incomplete"}


class SseClient(Client):
    """/api/sse streams of 20 events 100 ms apart, read to the end; latency = the whole stream
    (2 s when nothing is late), an incomplete stream is an error."""

    def iteration(self) -> None:
        self.request("sse", "GET", f"/api/sse?count={EVENTS}&interval=100", check=sse_complete)


def start_http_load(port: int, stop: threading.Event) -> list[Client]:
    clients: list[Client] = [
        AboutClient(port, 20, stop),
        AboutClient(port, 20, stop),
        TimeClient(port, 10, stop),
        FormActionClient(port, 3, stop),
        StaleTabClient(port, 3, stop),
        SseClient(port, 1, stop),
        SseClient(port, 1, stop),
    ]
    for c in clients:
        c.start()
    return clients


# -- realtime load ----------------------------------------------------------------------------


def lift_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start_subscribers(port: int, subscribers: int, rate: float) -> subprocess.Popen[str]:
    if not (NODE / "node_modules" / "ws").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE, check=True)
    options = {
        "url": f"ws://127.0.0.1:{port}/connection/websocket",
        "token": token("deploy-bench", ttl=3600),
        "channel": CHANNEL,
        "subscribers": subscribers,
        "apiUrl": f"http://127.0.0.1:{port}/_gateway/api/publish",
        "apiKey": API_KEY,
        "rate": rate,
    }
    proc = subprocess.Popen(
        ["node", str(NODE / "deploy-subscribers.mjs"), json.dumps(options)],
        cwd=NODE,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lift_fd_limit,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise SystemExit(f"deploy-subscribers.mjs did not start: {line!r}")
    return proc


def stop_subscribers(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate("stop\n", timeout=120)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


# -- phases -----------------------------------------------------------------------------------


@dataclass
class Deploy:
    release: int
    started: float  # wall clock: the deploy command began
    command_seconds: float = 0.0  # the deploy command's own duration
    served: float | None = None  # wall clock: /about first answered with the new release
    switch_seconds: float | None = None  # gateway's figure (reload only)
    drain_seconds: float | None = None
    generation: int | None = None
    ok: bool = True
    note: str = ""
    chunks: dict[int, int] = field(default_factory=dict)  # release -> status of its chunk

    @property
    def to_served(self) -> float | None:
        return None if self.served is None else self.served - self.started

    def window(self) -> tuple[float, float]:
        end = max(self.served or 0.0, self.started + self.command_seconds)
        return self.started, end + WINDOW_TAIL


@dataclass
class Phase:
    name: str
    deploys: list[Deploy] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    realtime: dict[str, Any] = field(default_factory=dict)
    load_started: float = 0.0
    orphans: list[int] = field(default_factory=list)


def gateway_reload(port: int) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "reload", "--port", str(port), "--timeout", "120"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
    )
    return done.returncode, (done.stdout + done.stderr).strip()


def wait_served(
    clients: list[Client], release: int, since: float, timeout: float = 60
) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ends = [
            s.ended
            for c in clients
            if isinstance(c, AboutClient)
            for s in list(c.samples)
            if s.release == release and s.started >= since and s.status == 200
        ]
        if ends:
            return min(ends)
        time.sleep(0.05)
    return None


def check_chunks(gw: GatewayProcess, chunks: dict[int, str | None]) -> dict[int, int]:
    return {n: gw.request(url, timeout=5)[0] for n, url in chunks.items() if url is not None}


def child_pid(gw: GatewayProcess) -> int | None:
    state = gw.ready_state() or {}
    pid = state.get("next", {}).get("pid")
    return int(pid) if pid else None


def run_phase(
    name: str,
    gw: GatewayProcess,
    link: Path,
    rels: list[Path],
    order: list[int],
    chunks: dict[int, str | None],
    args: argparse.Namespace,
) -> Phase:
    phase = Phase(name)
    stop = threading.Event()
    realtime = start_subscribers(gw.port, args.subscribers, args.rate)
    clients = start_http_load(gw.port, stop)
    phase.load_started = time.time()
    children: list[int] = []
    try:
        time.sleep(args.warmup)
        for release in order:
            pid = child_pid(gw)
            if pid:
                children.append(pid)
            deploy = Deploy(release, time.time())
            point(link, rels[release])
            t0 = time.monotonic()
            if name == "reload":
                rc, out = gateway_reload(gw.port)
                deploy.ok, deploy.note = rc == 0, out
                last = (gw.ready_state() or {}).get("next", {}).get("reload", {}).get("last", {})
                deploy.switch_seconds = last.get("switch_seconds")
                deploy.generation = last.get("generation")
            else:
                rc = gw.stop(signal.SIGTERM, timeout=60)
                stopped = time.monotonic() - t0
                gw.start()
                deploy.ok, deploy.note = rc == 0, f"gateway exited {rc} after {stopped:.2f} s"
            deploy.command_seconds = time.monotonic() - t0
            deploy.served = wait_served(clients, release, deploy.started)
            phase.deploys.append(deploy)
            print(
                f"  {name}: release {release}: {deploy.note.splitlines()[-1] if deploy.note else ''};"
                f" new release on /about after {deploy.to_served or float('nan'):.2f} s",
                flush=True,
            )
            time.sleep(1.0)  # the static set loads in the background after a switch
            deploy.chunks = check_chunks(gw, chunks)
            time.sleep(max(0.0, args.interval - 1.0))
    finally:
        stop.set()
        for c in clients:
            c.join(30)
        phase.samples = sorted((s for c in clients for s in c.samples), key=lambda s: s.started)
        phase.realtime = stop_subscribers(realtime)
    if name == "reload":  # the previous children are stopped once drained: wait for that
        wait_drained(gw, phase.deploys)
    current = child_pid(gw)
    phase.orphans = [pid for pid in children if pid != current and pid_alive(pid)]
    return phase


DRAINED_RE = re.compile(r"reload (\d+): previous child drained in ([\d.]+) s")


def wait_drained(gw: GatewayProcess, deploys: list[Deploy], timeout: float = 60) -> None:
    """Fill in each reload's drain time from the gateway's log ("previous child drained in")."""
    deadline = time.monotonic() + timeout
    while True:
        drained = {int(m[1]): float(m[2]) for m in DRAINED_RE.finditer(gw.log)}
        for d in deploys:
            d.drain_seconds = drained.get(d.generation or -1)
        if all(d.drain_seconds is not None for d in deploys if d.ok):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    time.sleep(2.0)  # "stopping it": SIGTERM, Next exits


# -- report -----------------------------------------------------------------------------------

HTTP_KINDS = ("about", "time", "notes", "action")


def p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * 0.99))] * 1000


def summarize(phase: Phase, warmup: float) -> dict[str, Any]:
    windows = [d.window() for d in phase.deploys]

    def in_window(s: Sample) -> bool:
        return any(a <= s.started <= b for a, b in windows)

    http = [s for s in phase.samples if s.kind in HTTP_KINDS]
    ok = [s for s in http if 200 <= s.status < 300 and not s.error]
    steady = [s.latency for s in ok if not in_window(s) and s.started > phase.load_started + warmup]
    switch = [s.latency for s in ok if in_window(s)]
    sse = [s for s in phase.samples if s.kind == "sse"]
    stale = [s for s in phase.samples if s.kind == "stale-action"]
    rt = phase.realtime
    flaps = 0  # /about answered by an older release after the new one had answered
    for d, after in zip(phase.deploys, [*phase.deploys[1:], None], strict=True):
        until = after.started if after else float("inf")
        flaps += sum(
            1
            for s in phase.samples
            if s.kind == "about"
            and d.served is not None
            and d.served < s.started < until
            and s.release not in (None, d.release)
        )
    per_deploy = []  # the switch window in two: the new child starting, then its first 2 s
    for d in phase.deploys:
        served = d.served or d.started + d.command_seconds
        starting = [s for s in ok if d.started <= s.started < served]
        cold = [s for s in ok if served <= s.started <= served + WINDOW_TAIL]
        slowest = max(starting + cold, key=lambda s: s.latency, default=None)
        per_deploy.append(
            {
                "release": d.release,
                "before_p99": p99([s.latency for s in starting]),
                "before_n": len(starting),
                "after_p99": p99([s.latency for s in cold]),
                "after_n": len(cold),
                "slowest": (slowest.kind, slowest.latency * 1000) if slowest else None,
            }
        )
    return {
        "per_deploy": per_deploy,
        "requests": len(http),
        "non_2xx": Counter(s.status for s in http if s.status and not 200 <= s.status < 300),
        "errors": Counter(s.error for s in http if s.status == 0),
        "sse": len(sse),
        "sse_bad": Counter(s.error or str(s.status) for s in sse if s.error or s.status != 200),
        "stale": Counter(s.status for s in stale),
        "steady_p99": p99(steady),
        "switch_p99": p99(switch),
        "steady_n": len(steady),
        "switch_n": len(switch),
        "to_served": [d.to_served for d in phase.deploys],
        "switch_seconds": [d.switch_seconds for d in phase.deploys],
        "drain_seconds": [d.drain_seconds for d in phase.deploys],
        "deploy_ok": sum(d.ok for d in phase.deploys),
        "flaps": flaps,
        "disconnects": Counter(code for _t, code in rt["disconnects"]),
        "ws_connect_errors": Counter(rt["connect_errors"]),
        "published": rt["published"],
        "publish_errors": Counter(rt["publish_errors"]),
        "publish_abandoned": rt["publish_abandoned"],
        "lost": rt["lost"],
        "duplicated": rt["duplicated"],
        "reordered": rt["reordered"],
        "subscribers": rt["subscribers"],
        "subs_with_problems": rt["subscribers_with_problems"],
        "recovered": rt["subscribe_replies"]["recovered"],
        "not_recovered": rt["subscribe_replies"]["not_recovered"],
        "epochs": rt["epochs"],
        "disconnect_times": sorted(t for t, _code in rt["disconnects"]),
        "delivery_p99": rt["delivery_p99_ms"],
        "delivery_max": rt["delivery_max_ms"],
        "chunks": [d.chunks for d in phase.deploys],
        "orphans": phase.orphans,
    }


def fmt_counter(c: Counter[Any]) -> str:
    total = sum(c.values())
    if not total:
        return "0"
    return f"{total} (" + ", ".join(f"{k}: {v}" for k, v in sorted(c.items(), key=str)) + ")"


def fmt_list(values: list[float | None], digits: int = 2) -> str:
    return " / ".join("-" if v is None else f"{v:.{digits}f}" for v in values)


def print_report(results: dict[str, dict[str, Any]]) -> None:
    names = list(results)
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("deploys that succeeded", lambda r: f"{r['deploy_ok']}/{len(r['to_served'])}"),
        ("HTTP requests (about, time, notes, action)", lambda r: str(r["requests"])),
        ("  non-2xx", lambda r: fmt_counter(r["non_2xx"])),
        ("  connection errors", lambda r: fmt_counter(r["errors"])),
        ("  p99 ms, steady state", lambda r: f"{r['steady_p99']:.0f} (n={r['steady_n']})"),
        ("  p99 ms, switch windows", lambda r: f"{r['switch_p99']:.0f} (n={r['switch_n']})"),
        ("SSE streams (20 events)", lambda r: str(r["sse"])),
        ("  cut, failed or refused", lambda r: fmt_counter(r["sse_bad"])),
        ("stale-tab Server Action posts", lambda r: fmt_counter(r["stale"])),
        ("old release on /about after the new", lambda r: str(r["flaps"])),
        ("deploy -> new /about, s", lambda r: fmt_list(r["to_served"])),
        ("gateway switch_seconds", lambda r: fmt_list(r["switch_seconds"])),
        ("previous child drained after, s", lambda r: fmt_list(r["drain_seconds"])),
        ("WebSocket subscribers", lambda r: str(r["subscribers"])),
        ("  disconnects (by close code)", lambda r: fmt_counter(r["disconnects"])),
        ("  reconnect attempts failed", lambda r: fmt_counter(r["ws_connect_errors"])),
        ("  resubscribed: recovered / not", lambda r: f"{r['recovered']} / {r['not_recovered']}"),
        ("publications acknowledged", lambda r: str(r["published"])),
        ("  publish attempts failed (retried)", lambda r: fmt_counter(r["publish_errors"])),
        (
            "  lost / duplicated / reordered",
            lambda r: f"{r['lost']} / {r['duplicated']} / {r['reordered']}",
        ),
        ("  subscribers missing any", lambda r: str(r["subs_with_problems"])),
        ("  delivery p99 / max ms", lambda r: f"{r['delivery_p99']:.1f} / {r['delivery_max']:.0f}"),
        ("previous children left running", lambda r: str(len(r["orphans"]))),
    ]
    width = max(len(label) for label, _ in rows) + 2
    print(f"\n{'':<{width}}" + "".join(f"{n:<28}" for n in names))
    for label, cell in rows:
        print(f"{label:<{width}}" + "".join(f"{cell(results[n]):<28}" for n in names))
    print("\nA /_next/static chunk only release N has, status after each deploy:")
    for n in names:
        for i, statuses in enumerate(results[n]["chunks"], 1):
            cells = ", ".join(f"r{k}: {v}" for k, v in statuses.items())
            print(f"  {n} deploy {i}: {cells}")
    print("\nSwitch windows, HTTP p99 ms: from the deploy command to the new release's first")
    print(f"answer (the new child starting), then the {WINDOW_TAIL:g} s after it:")
    for n in names:
        for i, d in enumerate(results[n]["per_deploy"], 1):
            kind, ms = d["slowest"] or ("-", float("nan"))
            print(
                f"  {n} deploy {i}: {d['before_p99']:.0f} (n={d['before_n']}), then "
                f"{d['after_p99']:.0f} (n={d['after_n']}); slowest: {kind} {ms:.0f} ms"
            )
    print("\nPublications per epoch (a restart of the memory engine starts a new one):")
    for n in names:
        r = results[n]
        for i, e in enumerate(r["epochs"]):
            line = f"  {n} epoch {i}: acknowledged {e['acked']}, lost {e['lost']}"
            cut = [t for t in r["disconnect_times"] if e["first_ack"] and t > e["first_ack"]]
            if cut and e["last_ack"] and e["last_ack"] > cut[0]:
                line += (
                    f" ({e['last_ack'] - cut[0]:.1f} s of publications acknowledged after the"
                    " first subscriber was disconnected)"
                )
            print(line)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--interval", type=float, default=15.0, help="seconds between deploys")
    parser.add_argument("--warmup", type=float, default=8.0, help="load before the first deploy")
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0, help="publications/s")
    parser.add_argument("--only", choices=("reload", "restart"), help="run one phase")
    args = parser.parse_args()
    if not (NEXT_DIR / ".next" / "BUILD_ID").exists():
        raise SystemExit("build the app first: make build")
    lift_fd_limit()
    began = time.monotonic()
    print("releases:", flush=True)
    rels = releases()
    chunks = {n: unique_chunk(rels, n) for n in range(len(rels))}
    ids = [action_id(r) for r in rels]
    print(f"  a chunk only this release has: {chunks}")
    scripts = set(
        re.findall(
            r'"(/_next/static/chunks/[^"\\]+\.js)"',
            (rels[0] / ".next" / "server" / "app" / "about.html").read_text(),
        )
    )
    print(
        f"  release 0's /about loads {len(scripts)} scripts, "
        f"{len(scripts - chunks_of(rels[-1]))} of them missing from release {len(rels) - 1}"
    )
    print(f"  notes Server Action id per release: {ids}", flush=True)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        link = Path(tmp) / "current"
        point(link, rels[0])
        config = {
            "next": {"dir": str(link)},
            "log": {"level": "info", "access": False},
            "realtime": {
                "namespaces": {
                    "deploy": {"history_size": 5000, "history_ttl": 600, "force_recovery": True}
                }
            },
        }
        gw = GatewayProcess(
            Path(tmp), config, env={"WS_SECRET": SECRET, "GATEWAY_API_KEY": API_KEY}
        )
        try:
            gw.start_ready(90)
        except AssertionError as e:
            raise SystemExit(f"{e}\n{gw.log[-3000:]}") from None
        try:
            phases = [("reload", [1, 2, 3]), ("restart", [1, 2, 3])]
            if args.only:
                phases = [p for p in phases if p[0] == args.only]
            for name, order in phases:
                print(f"phase {name}:", flush=True)
                if name == "restart" and "reload" in results:
                    # Restart from release 0 too, so both phases deploy 0 -> 1 -> 2 -> 3.
                    point(link, rels[0])
                    gw.stop(signal.SIGTERM, timeout=60)
                    gw.start()
                    gw.wait_ready(90)
                phase = run_phase(name, gw, link, rels, order, chunks, args)
                results[name] = summarize(phase, args.warmup)
        finally:
            gw.close()
            complaints = Counter(
                re.sub(r"\d+", "N", m[1])
                for m in re.finditer(r"^\S+ \S+ (?:WARNING|ERROR|CRITICAL)\s+(.*)$", gw.log, re.M)
            )
    print_report(results)
    if complaints:
        print("\nGateway warnings and errors (count, message):")
        for message, count in complaints.most_common(12):
            print(f"  {count:>5}  {message[:150]}")
    print(f"\ntotal time: {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
