// Many centrifuge SDK clients in one Node process, driven by the Python tests over
// stdin/stdout (tests/support/sdk.py, SdkSwarm): one process instead of one per client keeps a
// soak of tens of clients light on a small machine. Commands in, one JSON object per line:
//   {"op": "connect", "id": 3, "url": ..., "token": ..., "subscribe": ["ch", ...]}
//   {"op": "exit"}
// Events out, each with the client's id in "c": connected, connecting and disconnected (code,
// reason), subscribed (ch, recovered, wasRecovering, server), subscribing (a client-side
// subscription subscribing again: code, reason), unsubscribed, sub_error, error,
// and pub (ch, d: data, o: offset, server) for every publication.
import readline from "node:readline";
import WebSocket from "ws";
import { Centrifuge } from "centrifuge";

const out = (event) => process.stdout.write(JSON.stringify(event) + "\n");
const clients = new Map();

function connect(cmd) {
  const c = cmd.id;
  const client = new Centrifuge(cmd.url, {
    websocket: WebSocket,
    token: cmd.token,
    minReconnectDelay: 100,
    maxReconnectDelay: 2000,
    timeout: 5000,
  });
  clients.set(c, client);
  client.on("connected", (ctx) => out({ c, event: "connected", client: ctx.client }));
  client.on("connecting", (ctx) => out({ c, event: "connecting", code: ctx.code, reason: ctx.reason }));
  client.on("disconnected", (ctx) => out({ c, event: "disconnected", code: ctx.code, reason: ctx.reason }));
  client.on("error", (ctx) => out({ c, event: "error", type: ctx.type, code: ctx.error?.code ?? null, message: ctx.error?.message ?? "" }));
  // Server-side subscriptions (the token's channels claim) report on the client.
  client.on("subscribed", (ctx) =>
    out({ c, event: "subscribed", ch: ctx.channel, recovered: ctx.recovered, wasRecovering: ctx.wasRecovering, server: true }),
  );
  client.on("unsubscribed", (ctx) => out({ c, event: "unsubscribed", ch: ctx.channel, server: true }));
  client.on("publication", (ctx) => out({ c, event: "pub", ch: ctx.channel, d: ctx.data, o: ctx.offset ?? null, server: true }));
  for (const channel of cmd.subscribe ?? []) {
    const sub = client.newSubscription(channel);
    sub.on("subscribed", (ctx) =>
      out({ c, event: "subscribed", ch: channel, recovered: ctx.recovered, wasRecovering: ctx.wasRecovering, server: false }),
    );
    sub.on("subscribing", (ctx) => out({ c, event: "subscribing", ch: channel, code: ctx.code, reason: ctx.reason }));
    sub.on("unsubscribed", (ctx) => out({ c, event: "unsubscribed", ch: channel, code: ctx.code, reason: ctx.reason, server: false }));
    sub.on("error", (ctx) => out({ c, event: "sub_error", ch: channel, type: ctx.type, code: ctx.error?.code ?? null, message: ctx.error?.message ?? "" }));
    sub.on("publication", (ctx) => out({ c, event: "pub", ch: channel, d: ctx.data, o: ctx.offset ?? null, server: false }));
    sub.subscribe();
  }
  client.connect();
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  if (!line.trim()) return;
  const cmd = JSON.parse(line);
  if (cmd.op === "connect") connect(cmd);
  else if (cmd.op === "exit") {
    for (const client of clients.values()) client.disconnect();
    process.exit(0);
  }
});
rl.on("close", () => process.exit(0));
out({ c: null, event: "ready" });
