"""A stand-in child with WebSockets, for the gateway's WebSocket passthrough tests.

    python ws_child.py --port N

/ws           echoes text and binary; offers subprotocols chat.v2 then chat.v1; the message
              "close:<code>:<reason>" makes it close with that code and reason
/refuse       refuses the upgrade with 403
/silent       never answers (the upgrade hangs)
/hangup       closes the connection without an answer
/last-close   (HTTP) the code and reason of the last close a client sent, as JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json

import tornado.web
import tornado.websocket

last_close: dict[str, object] = {}


class Echo(tornado.websocket.WebSocketHandler):
    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        for preferred in ("chat.v2", "chat.v1"):
            if preferred in subprotocols:
                return preferred
        return None

    def open(self) -> None:
        self.write_message(json.dumps({"hello": self.request.headers.get("X-Forwarded-For")}))

    def on_message(self, message: str | bytes) -> None:
        if isinstance(message, str) and message.startswith("close:"):
            _, code, reason = message.split(":", 2)
            self.close(int(code), reason)
            return
        self.write_message(message, binary=isinstance(message, bytes))

    def on_close(self) -> None:
        last_close.update(code=self.close_code, reason=self.close_reason)


class Refuse(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_status(403)
        self.finish("no websockets here")


class Silent(tornado.web.RequestHandler):
    async def get(self) -> None:
        await asyncio.sleep(3600)


class Hangup(tornado.web.RequestHandler):
    def get(self) -> None:
        assert self.request.connection is not None
        self.request.connection.detach().close()  # type: ignore[attr-defined]


class Root(tornado.web.RequestHandler):
    def head(self) -> None:
        self.finish()

    def get(self) -> None:
        self.finish("ws child")


class LastClose(tornado.web.RequestHandler):
    def get(self) -> None:
        self.finish(last_close)


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    app = tornado.web.Application(
        [
            (r"/ws", Echo),
            (r"/refuse", Refuse),
            (r"/silent", Silent),
            (r"/hangup", Hangup),
            (r"/last-close", LastClose),
            (r"/", Root),
        ]
    )
    app.listen(args.port, "127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
