// Opens N idle connections (connected and subscribed, answering pings) and holds them until
// stdin closes. Prints "ready <n>" once all are open. Options as in fanout-clients.mjs
// (transport and subscriberToken too: http_stream and sse sessions subscribe by the token).
import WebSocket from "ws";
import { openEmulated } from "./emulated.mjs";

const o = JSON.parse(process.argv[2]);
const centrifugo = o.protocol === "centrifugo";
const socks = [];

function one() {
  if ((o.transport ?? "websocket") !== "websocket") {
    return openEmulated(o.http, o.transport, { id: 1, connect: { token: o.subscriberToken } });
  }
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(o.url, { perMessageDeflate: false });
    let replies = 0;
    ws.on("error", reject);
    ws.on("open", () => {
      if (!centrifugo) return resolve(ws);
      if (o.subscriberToken) return ws.send(JSON.stringify({ id: 1, connect: { token: o.subscriberToken } }));
      ws.send(
        JSON.stringify({ id: 1, connect: { token: o.token } }) + "\n" +
          JSON.stringify({ id: 2, subscribe: { channel: o.channel } }),
      );
    });
    ws.on("message", (data) => {
      for (const line of data.toString().split("\n")) {
        if (line === "{}") ws.send("{}");
        else if (line.startsWith('{"id":') && ++replies === (o.subscriberToken ? 1 : 2)) resolve(ws);
      }
    });
  });
}

for (let i = 0; i < o.subscribers; i += 250) {
  const batch = [];
  for (let j = i; j < Math.min(o.subscribers, i + 250); j++) batch.push(one());
  socks.push(...(await Promise.all(batch)));
}
console.log(`ready ${socks.length}`);
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
