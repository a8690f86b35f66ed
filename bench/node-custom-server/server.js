// The seed article's "custom server": Node http + next({ dev: false }).getRequestHandler(),
// the baseline the gateway is measured against. Usage:
//   node bench/node-custom-server/server.js <port> [<next app dir>]
const path = require("node:path");
const http = require("node:http");

const port = Number(process.argv[2] || 3000);
const dir = path.resolve(process.argv[3] || path.join(__dirname, "..", "..", "nextjs-app"));
const next = require(require.resolve("next", { paths: [dir] }));

const app = next({ dev: false, dir, hostname: "127.0.0.1", port });
const handle = app.getRequestHandler();

app.prepare().then(() => {
  const server = http.createServer((req, res) => handle(req, res));
  server.listen(port, "127.0.0.1", () => {
    console.log(`custom server ready on http://127.0.0.1:${port}`);
  });
});
