// A centrifuge SDK client driven by the Python tests over stdin/stdout, one JSON object per
// line. Commands in: {"op": ...}; events out: {"event": ...}. See tests/support/sdk.py.
import readline from "node:readline";
import WebSocket from "ws";
import { Centrifuge } from "centrifuge";
import { EventSource } from "eventsource";

const out = (event) => process.stdout.write(JSON.stringify(event) + "\n");
let client = null;
let tokenWaiters = [];
let nextToken = null;
const subTokens = {};

function waitToken() {
  if (nextToken !== null) {
    const t = nextToken;
    nextToken = null;
    return Promise.resolve(t);
  }
  out({ event: "need_token" });
  return new Promise((resolve) => tokenWaiters.push(resolve));
}

function watchSubscription(sub) {
  sub.on("subscribed", (ctx) =>
    out({
      event: "subscribed",
      channel: ctx.channel,
      recoverable: ctx.recoverable,
      recovered: ctx.recovered,
      wasRecovering: ctx.wasRecovering,
      position: ctx.streamPosition || null,
    }),
  );
  sub.on("publication", (ctx) =>
    out({ event: "publication", channel: ctx.channel, data: ctx.data, offset: ctx.offset ?? null, user: ctx.info?.user ?? null }),
  );
  sub.on("join", (ctx) => out({ event: "join", channel: ctx.channel, user: ctx.info.user }));
  sub.on("leave", (ctx) => out({ event: "leave", channel: ctx.channel, user: ctx.info.user }));
  sub.on("unsubscribed", (ctx) => out({ event: "unsubscribed", channel: sub.channel, code: ctx.code, reason: ctx.reason }));
  sub.on("error", (ctx) => out({ event: "sub_error", channel: sub.channel, type: ctx.type, code: ctx.error.code, message: ctx.error.message }));
}

async function handle(cmd) {
  const reply = (result) => out({ event: "result", op: cmd.op, id: cmd.id ?? null, result });
  const fail = (e) => out({ event: "result", op: cmd.op, id: cmd.id ?? null, error: { code: e.code ?? null, message: e.message ?? String(e) } });
  try {
    switch (cmd.op) {
      case "connect": {
        // cmd.transport (http_stream, sse): that fallback alone, on the same gateway, with
        // the emulation endpoint beside it; else the WebSocket at cmd.url.
        let endpoint = cmd.url;
        let emulation = {};
        if (cmd.transport && cmd.transport !== "websocket") {
          const origin = cmd.url.replace(/^ws/, "http").replace(/\/connection\/websocket$/, "");
          endpoint = [{ transport: cmd.transport, endpoint: `${origin}/connection/${cmd.transport}` }];
          emulation = { emulationEndpoint: `${origin}/connection/emulation`, eventsource: EventSource };
        }
        client = new Centrifuge(endpoint, {
          ...emulation,
          websocket: WebSocket,
          token: cmd.token,
          getToken: waitToken,
          minReconnectDelay: 100,
          maxReconnectDelay: 1000,
          timeout: 5000,
          debug: false,
        });
        client.on("state", (ctx) => out({ event: "state", state: ctx.newState }));
        client.on("connected", (ctx) => out({ event: "connected", client: ctx.client, transport: ctx.transport }));
        client.on("disconnected", (ctx) => out({ event: "disconnected", code: ctx.code, reason: ctx.reason }));
        client.on("connecting", (ctx) => out({ event: "connecting", code: ctx.code, reason: ctx.reason }));
        client.on("error", (ctx) => out({ event: "error", type: ctx.type, code: ctx.error?.code ?? null, message: ctx.error?.message ?? "" }));
        client.on("publication", (ctx) => out({ event: "publication", channel: ctx.channel, data: ctx.data, offset: ctx.offset ?? null, server: true }));
        client.on("subscribed", (ctx) => out({ event: "subscribed", channel: ctx.channel, recoverable: ctx.recoverable, recovered: ctx.recovered, wasRecovering: ctx.wasRecovering, server: true }));
        client.connect();
        return;
      }
      case "token":
        if (tokenWaiters.length) tokenWaiters.shift()(cmd.token);
        else nextToken = cmd.token;
        return;
      case "subscribe": {
        const opts = {};
        if (cmd.token) {
          subTokens[cmd.channel] = cmd.token;
          opts.token = cmd.token;
          opts.getToken = async () => subTokens[cmd.channel];
        }
        if (cmd.delta) opts.delta = cmd.delta;
        const sub = client.newSubscription(cmd.channel, opts);
        watchSubscription(sub);
        sub.subscribe();
        return;
      }
      case "unsubscribe":
        client.getSubscription(cmd.channel)?.unsubscribe();
        return;
      case "publish":
        reply(await client.getSubscription(cmd.channel).publish(cmd.data));
        return;
      case "presence":
        reply(await client.getSubscription(cmd.channel).presence());
        return;
      case "presence_stats":
        reply(await client.getSubscription(cmd.channel).presenceStats());
        return;
      case "history":
        reply(await client.getSubscription(cmd.channel).history({ limit: cmd.limit ?? -1 }));
        return;
      case "rpc":
        reply(await client.rpc(cmd.method, cmd.data ?? {}));
        return;
      case "disconnect":
        client.disconnect();
        return;
      case "exit":
        client?.disconnect();
        process.exit(0);
    }
  } catch (e) {
    fail(e);
  }
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  if (line.trim()) handle(JSON.parse(line));
});
rl.on("close", () => process.exit(0));
out({ event: "ready" });
