// Applies fossil deltas written by gateway/realtime/fossil.py with the centrifuge SDK's own
// code, for tests/unit/realtime/test_fossil.py. One JSON object in on stdin, one out on stdout.
//
// The SDK does not export its applyDelta; its codecs call it, and each Centrifuge instance owns
// one (`_codec`), so the deltas go through the same call the SDK makes on a publication:
//   bytes:   [{name, source, delta}] (base64) -> ProtobufCodec.applyDeltaIfNeeded, the raw
//            applyDelta on bytes: [{name, target} | {name, error}] (base64)
//   frames:  [{name, lines}] push frames of the JSON protocol, the first one full, as the
//            server writes them -> JsonCodec.decodeReplies + applyDeltaIfNeeded chained as
//            Subscription._handlePublication chains them: [{name, values, data} | {name, error}]
//   session: {channel, subscribe, lines} a whole client: Centrifuge + newSubscription(channel,
//            {delta: 'fossil'}) over a fake in-process WebSocket (no socket) that answers
//            connect, answers subscribe with `subscribe` and then sends `lines`:
//            {subscribeRequest, publications, errors, stats}
import { Centrifuge } from "centrifuge";
import { Centrifuge as CentrifugeProtobuf } from "centrifuge/build/protobuf";

const ENDPOINT = "ws://fossil.invalid/connection/websocket";
const b64 = (bytes) => Buffer.from(bytes).toString("base64");
const unb64 = (text) => new Uint8Array(Buffer.from(text, "base64"));

function applyBytes(cases) {
  const codec = new CentrifugeProtobuf(ENDPOINT, { websocket: class {} })._codec;
  return cases.map(({ name, source, delta }) => {
    try {
      const { newPrevValue } = codec.applyDeltaIfNeeded({ delta: true, data: unb64(delta) }, unb64(source));
      return { name, target: b64(newPrevValue) };
    } catch (e) {
      return { name, error: String(e.message ?? e) };
    }
  });
}

function applyFrames(cases) {
  const codec = new Centrifuge(ENDPOINT, { websocket: class {} })._codec;
  return cases.map(({ name, lines }) => {
    const values = [];
    const data = [];
    let prev;
    try {
      for (const line of lines) {
        for (const reply of codec.decodeReplies(line)) {
          const { newData, newPrevValue } = codec.applyDeltaIfNeeded(reply.push.pub, prev);
          prev = newPrevValue;
          values.push(b64(newPrevValue));
          data.push(newData);
        }
      }
      return { name, values, data };
    } catch (e) {
      return { name, values, data, error: String(e.message ?? e) };
    }
  });
}

function runSession({ channel, subscribe, lines }) {
  return new Promise((resolve) => {
    const result = { subscribeRequest: null, publications: [], errors: [], stats: null };
    let client = null;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      result.stats = client.getSubscription(channel)?.deltaStats() ?? null;
      client.disconnect();
      resolve(result);
    };
    // A delta the SDK cannot apply throws out of its message handler, past every handler of
    // the SDK: in a browser an uncaught error, here one the session records.
    process.on("uncaughtException", (e) => result.errors.push(`uncaught: ${e.message ?? e}`));
    const timer = setTimeout(() => {
      result.errors.push("timeout: not every publication arrived");
      finish();
    }, 5000);

    // The server side: answers the client's commands as Centrifugo would, then pushes `lines`.
    class FakeWebSocket {
      constructor() {
        setTimeout(() => this.onopen(), 0);
      }
      deliver(line) {
        setTimeout(() => this.onmessage({ data: line }), 0);
      }
      send(data) {
        for (const text of data.split("\n").filter((l) => l.trim())) {
          const cmd = JSON.parse(text);
          if (cmd.connect) {
            this.deliver(JSON.stringify({ id: cmd.id, connect: { client: "fossil-test", version: "0" } }));
          } else if (cmd.subscribe) {
            result.subscribeRequest = cmd.subscribe;
            this.deliver(JSON.stringify({ id: cmd.id, subscribe: subscribe }));
            for (const line of lines) this.deliver(line);
          }
        }
      }
      close() {
        setTimeout(() => this.onclose({ code: 1000, reason: "" }), 0);
      }
    }

    client = new Centrifuge(ENDPOINT, { websocket: FakeWebSocket, minReconnectDelay: 60000 });
    client.on("error", (ctx) => result.errors.push(`client: ${ctx.error?.message ?? ctx.type}`));
    client.on("disconnected", (ctx) => {
      if (ctx.code !== 0) {
        result.errors.push(`disconnected: ${ctx.code} ${ctx.reason}`);
        finish();
      }
    });
    client.on("connecting", (ctx) => {
      if (ctx.code !== 0) {
        result.errors.push(`connecting: ${ctx.code} ${ctx.reason}`);
        finish();
      }
    });
    const sub = client.newSubscription(channel, { delta: "fossil" });
    sub.on("error", (ctx) => result.errors.push(`subscription: ${ctx.error?.message ?? ctx.type}`));
    sub.on("publication", (ctx) => {
      result.publications.push(ctx.data);
      if (result.publications.length === lines.length) finish();
    });
    sub.subscribe();
    client.connect();
  });
}

let input = "";
process.stdin.setEncoding("utf8");
for await (const chunk of process.stdin) input += chunk;
const request = JSON.parse(input);
const output = {
  bytes: applyBytes(request.bytes ?? []),
  frames: applyFrames(request.frames ?? []),
  session: request.session ? await runSession(request.session) : null,
};
process.stdout.write(JSON.stringify(output));
