// The seed article's "custom server": Node http + next({ dev: false }).getRequestHandler(),
// with a `ws` WebSocketServer on the same port that broadcasts every message it receives to
// every other client. The baseline the gateway is measured against. Usage:
//   node bench/node/custom-server.js <port> [<next app dir>]
// WebSocket: ws://127.0.0.1:<port>/ws. A message is broadcast as is, and the sender gets
// "ack" back (so a load generator can keep a bounded window of messages in flight).
const path = require("node:path");
const http = require("node:http");
const { WebSocketServer, WebSocket } = require("ws");

const port = Number(process.argv[2] || 3000);
const dir = path.resolve(process.argv[3] || path.join(__dirname, "..", "..", "nextjs-app"));
const next = require(require.resolve("next", { paths: [dir] }));

const app = next({ dev: false, dir, hostname: "127.0.0.1", port });
const handle = app.getRequestHandler();

app.prepare().then(() => {
  const server = http.createServer((req, res) => handle(req, res));
  const wss = new WebSocketServer({ noServer: true });
  server.on("upgrade", (req, socket, head) => {
    if (req.url === "/ws") {
      wss.handleUpgrade(req, socket, head, (ws) => wss.emit("connection", ws, req));
    }
  });
  wss.on("connection", (ws) => {
    ws.on("message", (data, isBinary) => {
      for (const client of wss.clients) {
        if (client !== ws && client.readyState === WebSocket.OPEN) client.send(data, { binary: isBinary });
      }
      ws.send("ack");
    });
  });
  server.listen(port, "127.0.0.1", () => {
    console.log(`custom server ready on http://127.0.0.1:${port}`);
  });
});
