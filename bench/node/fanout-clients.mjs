// Fan-out load generator: N subscribers and one publisher on one channel, against either the
// gateway (Centrifugo JSON protocol) or the Node custom server (raw broadcast).
//   node fanout-clients.mjs '<json options>'
// Options: url, protocol ("centrifugo" | "raw"), token, channel, subscribers, rate (messages/s,
// 0 = saturation), window (messages in flight at saturation), duration, warmup, payload.
// Prints one JSON line with the results.
import WebSocket from "ws";

const o = JSON.parse(process.argv[2]);
const now = () => performance.timeOrigin + performance.now();
const centrifugo = o.protocol === "centrifugo";
const pad = "x".repeat(o.payload ?? 64);

// Latency histogram in 0.1 ms buckets up to 10 s.
const hist = new Uint32Array(100001);
let measuring = false;
let delivered = 0;

function record(t, count = 1) {
  if (!measuring) return;
  delivered += count;
  const b = Math.min(100000, Math.max(0, Math.round((now() - t) * 10)));
  hist[b] += count;
}

function percentile(p) {
  const total = hist.reduce((a, b) => a + b, 0);
  let seen = 0;
  for (let i = 0; i < hist.length; i++) {
    seen += hist[i];
    if (seen >= total * p) return i / 10;
  }
  return NaN;
}

function open(onMessage) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(o.url, { perMessageDeflate: false });
    ws.on("open", () => resolve(ws));
    ws.on("error", reject);
    ws.on("message", (data) => onMessage(ws, data));
  });
}

// Frames are read as bytes: counting lines and finding one timestamp in a Buffer costs far
// less than decoding every frame to a string (the load generator shares the machine).
const NL = 10;
function stampAt(buf) {
  const i = buf.indexOf('"t":');
  return i < 0 ? null : parseFloat(buf.toString("latin1", i + 4, i + 28));
}

function subscriberMessage(ws, buf) {
  if (centrifugo) {
    if (buf.length === 2 && buf[0] === 123 && buf[1] === 125) {
      ws.send("{}"); // a ping
      return;
    }
    let lines = 1;
    for (let i = buf.indexOf(NL); i >= 0; i = buf.indexOf(NL, i + 1)) lines++;
    if (lines > 1 && (buf.indexOf("\n{}") >= 0 || buf.indexOf("{}\n") === 0)) ws.send("{}");
    const t = stampAt(buf); // the frame's first (oldest) publication
    if (t !== null) record(t, lines);
  } else {
    if (buf.length === 3 && buf.toString() === "ack") return;
    const t = stampAt(buf);
    if (t !== null) record(t);
  }
}

async function connectCentrifugo(ws) {
  await new Promise((resolve) => {
    let replies = 0;
    const listener = (data) => {
      for (const line of data.toString().split("\n")) if (line.startsWith('{"id":')) replies++;
      if (replies >= 2) {
        ws.off("message", listener); // only for the handshake
        resolve();
      }
    };
    ws.on("message", listener);
    ws.send(
      JSON.stringify({ id: 1, connect: { token: o.token } }) + "\n" +
        JSON.stringify({ id: 2, subscribe: { channel: o.channel } }),
    );
  });
}

async function openSubscribers(n) {
  const all = [];
  for (let i = 0; i < n; i += 200) {
    const batch = [];
    for (let j = i; j < Math.min(n, i + 200); j++) {
      batch.push(
        open(subscriberMessage).then(async (ws) => {
          if (centrifugo) await connectCentrifugo(ws);
          return ws;
        }),
      );
    }
    all.push(...(await Promise.all(batch)));
  }
  return all;
}

let stopped = false;
let go = false;
const subs = await openSubscribers(o.subscribers);
let inflight = 0;
let acked = 0;
let sent = 0;
let id = 10;
const publisher = await open((ws, data) => {
  for (const line of data.toString().split("\n")) {
    if (centrifugo) {
      if (line === "{}") ws.send("{}");
      else if (line.startsWith('{"id":') && line.includes('"publish"')) {
        inflight--;
        acked++;
      }
    } else if (line === "ack") {
      inflight--;
      acked++;
    }
  }
  if (go && o.rate === 0) pump();
});
if (centrifugo) await connectCentrifugo(publisher);

function send() {
  const data = { t: now(), seq: sent, pad };
  const msg = centrifugo
    ? JSON.stringify({ id: id++, publish: { channel: o.channel, data } })
    : JSON.stringify(data);
  publisher.send(msg);
  inflight++;
  sent++;
}

function pump() {
  while (!stopped && inflight < o.window) send();
}

let timer = null;
go = true;
if (o.rate === 0) {
  pump();
} else {
  const perTick = o.rate / 100; // 10 ms ticks
  let due = 0;
  timer = setInterval(() => {
    due += perTick;
    while (due >= 1) {
      send();
      due -= 1;
    }
  }, 10);
}

await new Promise((r) => setTimeout(r, o.warmup * 1000));
measuring = true;
const started = now();
await new Promise((r) => setTimeout(r, o.duration * 1000));
measuring = false;
const elapsed = (now() - started) / 1000;
stopped = true;
if (timer) clearInterval(timer);

console.log(
  JSON.stringify({
    subscribers: subs.length,
    delivered,
    deliveries_per_s: delivered / elapsed,
    p50_ms: percentile(0.5),
    p99_ms: percentile(0.99),
    published: sent,
  }),
);
for (const ws of subs) ws.terminate();
publisher.terminate();
process.exit(0);
