// Fan-out load generator: N subscribers and one publisher on one channel, against either the
// gateway (Centrifugo JSON protocol) or the Node custom server (raw broadcast).
//   node fanout-clients.mjs '<json options>'
// Options: url, protocol ("centrifugo" | "raw"), token, channel, subscribers, rate (messages/s,
// 0 = saturation), window (messages in flight at saturation), duration, warmup, payload.
// Centrifugo only: transport of the subscribers ("websocket", default, or "http_stream" / "sse"
// through `http`, the gateway's http://host:port; the publisher is always a WebSocket),
// subscriberToken (a token whose channels claim subscribes at connect: no subscribe command),
// verify (every subscriber must get every publication once and in order: after the run the
// publisher stops, the subscribers drain, and lost / duplicated / disconnects are reported).
// Prints one JSON line with the results.
import WebSocket from "ws";
import { closeEmulated, openEmulated } from "./emulated.mjs";

const o = JSON.parse(process.argv[2]);
const now = () => performance.timeOrigin + performance.now();
const centrifugo = o.protocol === "centrifugo";
const pad = "x".repeat(o.payload ?? 64);
const transport = o.transport ?? "websocket";

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

// -- verify: each subscriber's publications by their seq -------------------------------------
const PUB = Buffer.from('"pub":{'); // a publication's push (not a disconnect push)
const SEQ = Buffer.from('"seq":');
const check = { lost: 0, duplicated: 0, received: 0, disconnects: {} };

function seqAt(buf, i) {
  return parseInt(buf.toString("latin1", i + SEQ.length, i + SEQ.length + 16), 10);
}

// The pushes in buf (a frame, or whole lines of a stream) against the subscriber's next
// expected seq: the first and last seq and the number of pushes tell gaps and repeats.
function deliver(sub, buf) {
  let pushes = 0;
  for (let i = buf.indexOf(PUB); i >= 0; i = buf.indexOf(PUB, i + PUB.length)) pushes++;
  if (pushes === 0) return;
  const t = stampAt(buf); // the oldest publication in buf, as for the WebSocket frames
  if (t !== null) record(t, pushes);
  const first = seqAt(buf, buf.indexOf(SEQ));
  const last = pushes === 1 ? first : seqAt(buf, buf.lastIndexOf(SEQ));
  if (first < sub.next) check.duplicated += sub.next - first;
  else check.lost += first - sub.next;
  const span = last - first + 1;
  if (pushes < span) check.lost += span - pushes;
  else check.duplicated += pushes - span;
  if (last >= sub.next) sub.next = last + 1;
  check.received += pushes;
}

let closing = false;
function disconnected(sub, reason) {
  sub.closed = true;
  if (!closing) check.disconnects[reason] = (check.disconnects[reason] ?? 0) + 1;
}

function subscriberMessage(ws, buf) {
  if (centrifugo) {
    if (buf.length === 2 && buf[0] === 123 && buf[1] === 125) {
      ws.send("{}"); // a ping
      return;
    }
    if (o.verify) {
      if (buf.indexOf("\n{}") >= 0 || buf.indexOf("{}\n") === 0) ws.send("{}");
      deliver(ws.sub, buf);
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

async function connectCentrifugo(ws, tokenWithChannels) {
  await new Promise((resolve) => {
    let replies = 0;
    const expected = tokenWithChannels ? 1 : 2;
    const listener = (data) => {
      for (const line of data.toString().split("\n")) if (line.startsWith('{"id":')) replies++;
      if (replies >= expected) {
        ws.off("message", listener); // only for the handshake
        resolve();
      }
    };
    ws.on("message", listener);
    if (tokenWithChannels) ws.send(JSON.stringify({ id: 1, connect: { token: tokenWithChannels } }));
    else
      ws.send(
        JSON.stringify({ id: 1, connect: { token: o.token } }) + "\n" +
          JSON.stringify({ id: 2, subscribe: { channel: o.channel } }),
      );
  });
}

function openSubscriber() {
  const sub = { next: 0, closed: false };
  if (transport !== "websocket") {
    return openEmulated(o.http, transport, { id: 1, connect: { token: o.subscriberToken } }, {
      onLines: (_session, buf) => deliver(sub, buf),
      onClose: (session) => {
        const text = session.last ? session.last.toString() : "";
        const code = /"disconnect":\{"code":(\d+)/.exec(text);
        disconnected(sub, `${transport} ${code ? code[1] : session.error ?? "stream ended"}`);
      },
    }).then((session) => Object.assign(sub, { session }));
  }
  return open(subscriberMessage).then(async (ws) => {
    ws.sub = sub;
    ws.on("close", (code) => disconnected(sub, `websocket ${code}`));
    if (centrifugo) await connectCentrifugo(ws, o.subscriberToken);
    return Object.assign(sub, { ws });
  });
}

async function openSubscribers(n) {
  const all = [];
  for (let i = 0; i < n; i += 200) {
    const batch = [];
    for (let j = i; j < Math.min(n, i + 200); j++) batch.push(openSubscriber());
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
const result = {
  subscribers: subs.length,
  delivered,
  deliveries_per_s: delivered / elapsed,
  p50_ms: percentile(0.5),
  p99_ms: percentile(0.99),
  published: sent,
};
if (timer) clearInterval(timer);
if (o.verify) {
  // Publish no more; wait for every acknowledgement, then for each subscriber to have read
  // the last publication (10 s at most each): what is still missing then is lost.
  const until = async (done) => {
    for (const deadline = Date.now() + 10_000; !done() && Date.now() < deadline; )
      await new Promise((r) => setTimeout(r, 20));
  };
  const publishing = sent;
  stopped = true;
  await until(() => acked >= publishing);
  await until(() => subs.every((s) => s.next >= publishing || s.closed));
  for (const s of subs) check.lost += Math.max(0, publishing - s.next);
  Object.assign(result, { acknowledged: acked, ...check });
}
stopped = true;
closing = true;
console.log(JSON.stringify(result));
for (const s of subs) {
  if (s.session) closeEmulated(s.session);
  else s.ws.terminate();
}
publisher.terminate();
process.exit(0);
