// Realtime load for bench/deploy.py: N recoverable subscribers on one channel and one publisher
// on the server API, kept running across deploys; reports what every subscriber got.
//   node deploy-subscribers.mjs '<json options>'
// Options: url (WebSocket), token, channel, subscribers, apiUrl, apiKey, rate (publications/s).
// Prints "ready" once every subscriber is subscribed, then publishes; on a line "stop" (or EOF)
// on stdin it stops publishing, waits `settle` seconds for the last deliveries and prints one
// JSON line with the results.
//
// Like the SDK, a subscriber that loses its socket reconnects (backoff with full jitter, capped
// at 2 s) and subscribes with recover: true from the last offset it saw. The
// publisher retries a failed publish with the same idempotency_key, so a publication is either
// acknowledged once (with its epoch and offset) or given up after `publishGiveUp` seconds.
import WebSocket from "ws";
import readline from "node:readline";

const o = JSON.parse(process.argv[2]);
const now = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const settle = o.settle ?? 3;
const publishGiveUp = o.publishGiveUp ?? 30;

// Epoch strings become small numbers so that a received publication is one number:
// epochIndex * 2^32 + offset, comparable in the order the channel's history defines.
const epochs = new Map();
const key = (epoch, offset) => {
  if (!epochs.has(epoch)) epochs.set(epoch, epochs.size);
  return epochs.get(epoch) * 2 ** 32 + offset;
};

const hist = new Uint32Array(100001); // delivery latency, 0.1 ms buckets up to 10 s
function percentile(p) {
  const total = hist.reduce((a, b) => a + b, 0);
  let seen = 0;
  for (let i = 0; i < hist.length; i++) {
    seen += hist[i];
    if (seen >= total * p) return i / 10;
  }
  return NaN;
}

const disconnects = []; // {t, code, reason}
const connectErrors = []; // {t, message}
const subscribeReplies = { fresh: 0, recovered: 0, not_recovered: 0, errors: 0 };
let stopping = false;

class Subscriber {
  constructor(index) {
    this.index = index;
    this.received = [];
    this.epoch = null;
    this.offset = 0;
    this.subscribed = false;
  }

  connect() {
    return new Promise((resolve) => {
      const ws = new WebSocket(o.url, { perMessageDeflate: false });
      this.ws = ws;
      let opened = false;
      ws.on("open", () => {
        opened = true;
        const subscribe = { channel: o.channel };
        if (this.epoch !== null) {
          Object.assign(subscribe, { recover: true, epoch: this.epoch, offset: this.offset });
        }
        const connect = { id: 1, connect: { token: o.token } };
        ws.send(JSON.stringify(connect) + "\n" + JSON.stringify({ id: 2, subscribe }));
      });
      ws.on("message", (data) => this.onFrame(data.toString(), resolve));
      ws.on("error", (e) => {
        if (!opened) connectErrors.push({ t: now(), message: e.code || e.message });
      });
      ws.on("close", (code, reason) => {
        this.subscribed = false;
        if (opened) disconnects.push({ t: now(), code, reason: reason.toString() });
        if (stopping) return resolve(false);
        // Backoff as the SDK does it, with a lower cap (2 s) so that the bench's restarts are
        // not measured as the backoff: full jitter, doubling from 0.2 s.
        this.attempts = opened ? 0 : (this.attempts ?? 0) + 1;
        const delay = Math.random() * Math.min(2000, 200 * 2 ** this.attempts);
        setTimeout(() => this.connect().then(resolve), delay);
      });
    });
  }

  onFrame(text, resolve) {
    for (const line of text.split("\n")) {
      if (line === "{}") {
        this.ws.send("{}");
        continue;
      }
      const msg = JSON.parse(line);
      if (msg.id === 2) {
        if (msg.error) {
          subscribeReplies.errors++;
          this.ws.close();
          continue;
        }
        const r = msg.subscribe;
        if (this.epoch === null) subscribeReplies.fresh++;
        else if (r.recovered) subscribeReplies.recovered++;
        else subscribeReplies.not_recovered++;
        for (const pub of r.publications ?? []) this.record(r.epoch, pub);
        // The reply's offset is the channel's top: in a new epoch (not recovered) the
        // publications before it are lost to this subscriber, which the report counts.
        this.offset = r.epoch === this.epoch ? Math.max(this.offset, r.offset) : r.offset;
        this.epoch = r.epoch;
        this.subscribed = true;
        resolve(true);
      } else if (msg.push?.pub) {
        this.record(this.epoch, msg.push.pub);
      }
    }
  }

  record(epoch, pub) {
    this.received.push(key(epoch, pub.offset));
    this.offset = pub.offset;
    const b = Math.min(100000, Math.max(0, Math.round((now() - pub.data.t) * 10)));
    hist[b]++;
  }
}

// Subscribers, in batches (connecting 200 at once is a burst nobody needs to measure).
const subs = [];
for (let i = 0; i < o.subscribers; i += 50) {
  const batch = [];
  for (let j = i; j < Math.min(o.subscribers, i + 50); j++) {
    const s = new Subscriber(j);
    subs.push(s);
    batch.push(s.connect());
  }
  await Promise.all(batch);
}
console.log("ready");

// The publisher: one publication at a time, paced at `rate`.
const acked = []; // {seq, key, t}
const publishErrors = []; // {t, seq, message}
let abandoned = 0;
let publishing = true;

async function publishOne(seq) {
  const started = now();
  const body = JSON.stringify({
    channel: o.channel,
    data: { seq, t: now() },
    idempotency_key: `deploy-${seq}`,
  });
  while (publishing || now() - started < 5000) {
    try {
      const resp = await fetch(o.apiUrl, {
        method: "POST",
        headers: { "X-API-Key": o.apiKey, "Content-Type": "application/json" },
        body,
        signal: AbortSignal.timeout(5000),
      });
      const reply = await resp.json();
      if (resp.status === 200 && reply.result?.epoch) {
        acked.push({ seq, key: key(reply.result.epoch, reply.result.offset), t: now() });
        return;
      }
      const message = `HTTP ${resp.status} ${JSON.stringify(reply).slice(0, 100)}`;
      publishErrors.push({ t: now(), seq, message });
    } catch (e) {
      publishErrors.push({ t: now(), seq, message: e.cause?.code || e.name || String(e) });
    }
    if (now() - started > publishGiveUp * 1000) break;
    await sleep(100);
  }
  abandoned++;
}

const publisher = (async () => {
  const interval = 1000 / o.rate;
  let due = now();
  for (let seq = 0; publishing; seq++) {
    await publishOne(seq);
    due += interval;
    const wait = due - now();
    if (wait > 0) await sleep(wait);
    else if (wait < -1000) due = now(); // after an outage: resume the pace, no burst
  }
})();

await new Promise((resolve) => {
  const rl = readline.createInterface({ input: process.stdin });
  rl.on("line", (line) => line.trim() === "stop" && resolve());
  rl.on("close", resolve);
});
publishing = false;
await publisher;
await sleep(settle * 1000);
stopping = true;

// Every subscriber must hold exactly the acknowledged publications, each once, in order.
const expected = new Set(acked.map((a) => a.key));
const epochOf = (k) => Math.floor(k / 2 ** 32);
const perEpoch = [...epochs.keys()].map(() => ({
  acked: 0,
  lost: 0,
  first_ack: null,
  last_ack: null,
}));
for (const a of acked) {
  const e = perEpoch[epochOf(a.key)];
  e.acked++;
  e.first_ack ??= a.t / 1000;
  e.last_ack = a.t / 1000;
}
const totals = {
  delivered: 0,
  lost: 0,
  duplicated: 0,
  reordered: 0,
  unexpected: 0,
  not_subscribed: 0,
};
let subsWithProblems = 0;
for (const s of subs) {
  const seen = new Set();
  let last = -1;
  let problems = 0;
  for (const k of s.received) {
    totals.delivered++;
    if (seen.has(k)) {
      totals.duplicated++;
      problems++;
      continue;
    }
    seen.add(k);
    if (k < last) {
      totals.reordered++;
      problems++;
    }
    last = Math.max(last, k);
    if (!expected.has(k)) totals.unexpected++;
  }
  for (const k of expected) {
    if (!seen.has(k)) {
      totals.lost++;
      perEpoch[epochOf(k)].lost++;
      problems++;
    }
  }
  if (!s.subscribed) totals.not_subscribed++;
  if (problems) subsWithProblems++;
}

const tally = (items, field) => {
  const out = {};
  for (const item of items) out[item[field]] = (out[item[field]] ?? 0) + 1;
  return out;
};
const result = JSON.stringify({
  subscribers: subs.length,
  published: acked.length,
  publish_errors: tally(publishErrors, "message"),
  publish_abandoned: abandoned,
  ...totals,
  subscribers_with_problems: subsWithProblems,
  disconnects: disconnects.map((d) => [d.t / 1000, d.code]),
  connect_errors: tally(connectErrors, "message"),
  subscribe_replies: subscribeReplies,
  epochs: perEpoch,
  delivery_p50_ms: percentile(0.5),
  delivery_p99_ms: percentile(0.99),
  delivery_max_ms: percentile(1),
});
for (const s of subs) s.ws?.terminate();
// A pipe is written asynchronously: exit only once the line is out.
process.stdout.write(result + "\n", () => process.exit(0));
