"""A stand-in for `next start` whose responses are shaped by the query string, for the
compression rules that the bundled app has no page for.

    python shaped_child.py --port N

GET|HEAD /shaped?...
    status=200         the status
    type=text/plain    Content-Type ("" for none)
    size=4096          body bytes (a compressible text, the same for the same size)
    chunks=1           sent in this many pieces...
    interval=0         ...this many ms apart (chunked, unless length=1)
    length=1           send Content-Length (with chunks=1 it is the default; 0: chunked)
    sse=1              the body is `chunks` events `data: {"i": i, "t": <ms since epoch>}`
    gzip=1             the body is gzipped, with Content-Encoding: gzip
    header=Name:Value  an extra response header (repeatable)
    etag=TAG           ETag: TAG, and 304 when If-None-Match names it
    delay=0            ms to wait before answering

Every response says what it was asked with: X-Seen-Accept-Encoding, X-Seen-If-None-Match,
X-Seen-RSC, and which request to /shaped it answers: X-Child-Request (1, 2, ...).

GET /count: ``{"requests": n}``, the requests to /shaped so far (a cache test counts what
reached the child).
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


def text_body(size: int) -> bytes:
    line = b"a line of a compressible body, numbered %06d\n"
    out = b"".join(line % i for i in range(size // 40 + 1))
    return out[:size]


_serials = itertools.count(1)
_lock = threading.Lock()
_served = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        global _served
        url = urlparse(self.path)
        if url.path == "/count":
            body = json.dumps({"requests": _served}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        with _lock:
            serial = next(_serials)
            _served = serial
        q = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        extra = parse_qs(url.query).get("header", [])
        status = int(q.get("status", "200"))
        chunks = max(1, int(q.get("chunks", "1")))
        interval = float(q.get("interval", "0")) / 1000
        sse = q.get("sse") == "1"
        etag = q.get("etag")
        length = q.get("length", "1" if chunks == 1 and not sse else "0") == "1"
        if etag and etag in self.headers.get("If-None-Match", ""):
            status = 304
        time.sleep(float(q.get("delay", "0")) / 1000)
        self.send_response(status)
        self.send_header("X-Child-Request", str(serial))
        self.send_header("X-Seen-RSC", self.headers.get("RSC", "-"))
        self.send_header("X-Seen-Accept-Encoding", self.headers.get("Accept-Encoding", "-"))
        self.send_header("X-Seen-If-None-Match", self.headers.get("If-None-Match", "-"))
        content_type = q.get("type", "text/event-stream" if sse else "text/plain")
        if content_type:
            self.send_header("Content-Type", content_type)
        for item in extra:
            name, _, value = item.partition(":")
            self.send_header(name.strip(), value.strip())
        if etag:
            self.send_header("ETag", etag)
        if status in (204, 304):
            self.end_headers()
            return
        if sse:
            pieces = None
        else:
            body = text_body(int(q.get("size", "4096")))
            if q.get("gzip") == "1":
                body = gzip.compress(body, mtime=0)
                self.send_header("Content-Encoding", "gzip")
            step = -(-len(body) // chunks)
            pieces = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
        if length and pieces is not None:
            self.send_header("Content-Length", str(sum(map(len, pieces))))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.command == "HEAD":
            return
        for i in range(chunks):
            if i and interval:
                time.sleep(interval)
            if pieces is None:
                event = json.dumps({"i": i, "t": time.time() * 1000})
                data = f"id: {i}\ndata: {event}\n\n".encode()
            else:
                data = pieces[i] if i < len(pieces) else b""
            if not data:
                continue
            if length and pieces is not None:
                self.wfile.write(data)
            else:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        if not (length and pieces is not None):
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"shaped child on {args.port}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
