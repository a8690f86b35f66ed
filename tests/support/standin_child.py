"""A stand-in for `next start` in supervision tests: a small HTTP server with knobs.

    python standin_child.py --port N [--start-delay S] [--exit-after S] [--exit-code C]
                            [--never-ready] [--ignore-sigterm] [--grandchild]

GET /                 -> 200 "standin <pid>"
GET /slow?s=          -> 200 after s seconds (an in-flight request)
GET /crash            -> the process exits with status 3 at once
GET /truncate         -> Content-Length 100000, 1000 bytes, then the connection is closed
GET /chunked-truncate -> two chunks of a chunked body, then the connection is closed
GET /no-response      -> the connection is closed without a response
GET /stall?s=&chunks= -> chunked; a chunk every s seconds (silence between chunks)
GET /close-after?ms=  -> 200 with keep-alive, then the connection is closed after ms
GET /version          -> the VERSION file of its working directory (a release, for reloads)
--close-reused        -> a second request on the same connection is met with a close

Files in the working directory (a release) change how it starts, for the reload tests:
BROKEN (exit at once with status 1), START_DELAY (seconds before listening), CRASH_AFTER
(seconds after listening, then exit with status 3).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    close_reused = False
    requests_on_connection = 0

    def _reply(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self._reply(b"")

    def _hang_up(self) -> None:
        self.wfile.flush()
        self.close_connection = True

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.requests_on_connection += 1
        if self.close_reused and self.requests_on_connection > 1:
            return self._hang_up()
        self._reply(b"posted %d" % len(body))

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        self.requests_on_connection += 1
        if self.close_reused and self.requests_on_connection > 1:
            return self._hang_up()
        if url.path == "/crash":
            os._exit(3)
        if url.path == "/slow":
            time.sleep(float(query.get("s", ["1"])[0]))
        if url.path == "/no-response":
            return self._hang_up()
        if url.path == "/truncate":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            return self._hang_up()
        if url.path in ("/chunked-truncate", "/stall"):
            chunks = 2 if url.path == "/chunked-truncate" else int(query.get("chunks", ["3"])[0])
            pause = float(query.get("s", ["0"])[0])
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(chunks):
                if i:
                    time.sleep(pause)
                self._chunk(b"part %d\n" % i)
            if url.path == "/stall":
                self.wfile.write(b"0\r\n\r\n")
            return self._hang_up()
        if url.path == "/version":
            try:
                with open("VERSION", "rb") as f:
                    return self._reply(f.read().strip())
            except OSError:
                return self._reply(b"none")
        if url.path == "/close-after":
            self._reply(b"closing soon")
            self.wfile.flush()
            time.sleep(float(query.get("ms", ["50"])[0]) / 1000)
            return self._hang_up()
        self._reply(f"standin {os.getpid()}".encode())

    def log_message(self, format: str, *args: object) -> None:
        sys.stdout.write("request " + format % args + "\n")
        sys.stdout.flush()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--start-delay", type=float, default=0.0)
    p.add_argument("--exit-after", type=float, default=None)
    p.add_argument("--exit-code", type=int, default=1)
    p.add_argument("--never-ready", action="store_true")
    p.add_argument("--ignore-sigterm", action="store_true")
    p.add_argument("--grandchild", action="store_true")
    p.add_argument("--close-reused", action="store_true")
    args = p.parse_args()
    Handler.close_reused = args.close_reused

    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print(f"standin pid {os.getpid()} pgid {os.getpgrp()}", flush=True)
    print("standin says something on stderr", file=sys.stderr, flush=True)
    if args.grandchild:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        print(f"grandchild pid {child.pid}", flush=True)
    if os.path.exists("BROKEN"):
        print("standin: this release is broken", flush=True)
        sys.exit(1)
    if os.path.exists("START_DELAY"):
        with open("START_DELAY") as f:
            args.start_delay += float(f.read().strip() or 0)
    if os.path.exists("CRASH_AFTER"):
        with open("CRASH_AFTER") as f:
            crash_after = float(f.read().strip() or 0)
        threading.Timer(args.start_delay + crash_after, lambda: os._exit(3)).start()
    if args.exit_after is not None:
        threading.Timer(args.exit_after, lambda: os._exit(args.exit_code)).start()
    if args.never_ready:
        while True:
            time.sleep(3600)
    time.sleep(args.start_delay)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
