// A client of the gateway's bidirectional emulation (http_stream, sse) on node:http, for the
// load generators. node:http rather than fetch: a fetch body is a WHATWG stream with a promise
// per read, and the load generator shares the two cores with the server it measures.
//   http_stream: POST /connection/http_stream, body = the connect command; the chunked
//                response carries newline-delimited JSON, one chunk per flush of the session.
//   sse:         GET /connection/sse?cf_connect=<connect command>; each flush is one event,
//                `data: <line>\n` per line and a blank line.
// Commands from the client (here only pongs) go up as POST /connection/emulation.
import http from "node:http";

const streams = new http.Agent({ keepAlive: false, maxSockets: Infinity });
const posts = new http.Agent({ keepAlive: true, maxSockets: 32 });
const NL = 10;
const PING = Buffer.from("{}\n");

export const TRANSPORTS = ["http_stream", "sse"];

export function emulationPost(base, session, data) {
  return new Promise((resolve, reject) => {
    const body = JSON.stringify({ session: session.id, node: session.node, data });
    const req = http.request(
      `${base}/connection/emulation`,
      {
        method: "POST",
        agent: posts,
        headers: { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) },
      },
      (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode));
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

// True if the lines in buf hold a server ping: a line `{}` (`data: {}` in an event stream).
function hasPing(buf) {
  for (let i = buf.indexOf(PING); i >= 0; i = buf.indexOf(PING, i + 1)) {
    if (i === 0 || buf[i - 1] === NL || buf[i - 1] === 32) return true;
  }
  return false;
}

// Opens one emulated session with `connect` (a command object) and resolves once its connect
// reply is in. onLines(session, buf) then gets every later piece of the stream cut at a line
// end (whole lines only, as bytes); the session answers pings itself. When the stream ends,
// session.closed is set and onClose(session) called; session.last holds the last bytes read
// (a disconnect push, if the server ended it), session.error a connection error.
export function openEmulated(base, transport, connect, { onLines = () => {}, onClose = () => {} } = {}) {
  const command = JSON.stringify(connect);
  const session = { transport, id: null, node: null, closed: false, last: null, pongs: 0 };
  return new Promise((resolve, reject) => {
    const req =
      transport === "sse"
        ? http.request(`${base}/connection/sse?cf_connect=${encodeURIComponent(command)}`, {
            agent: streams,
            headers: { Accept: "text/event-stream" },
          })
        : http.request(`${base}/connection/http_stream`, {
            method: "POST",
            agent: streams,
            headers: {
              "Content-Type": "application/json",
              "Content-Length": Buffer.byteLength(command),
            },
          });
    session.request = req;
    let rest = null;
    const ended = () => {
      if (session.closed) return;
      session.closed = true;
      onClose(session);
    };
    const lines = (buf) => {
      if (session.id === null) {
        // The connect reply is the stream's first line.
        const first = buf.indexOf(NL);
        const text = buf.toString("utf8", 0, first).replace(/^data: /, "");
        const reply = JSON.parse(text);
        if (!reply.connect) return reject(new Error(`connect refused: ${text}`));
        session.id = reply.connect.session;
        session.node = reply.connect.node;
        session.reply = reply.connect;
        resolve(session);
        if (buf.length - first > 2) lines(buf.subarray(first + 1)); // more than a blank line
        return;
      }
      if (hasPing(buf)) {
        session.pongs++;
        emulationPost(base, session, "{}").catch(() => {});
      }
      session.last = buf;
      onLines(session, buf);
    };
    req.on("response", (res) => {
      if (res.statusCode !== 200) {
        reject(new Error(`${transport}: HTTP ${res.statusCode}`));
        res.resume();
        return;
      }
      res.on("data", (chunk) => {
        const buf = rest ? Buffer.concat([rest, chunk]) : chunk;
        const end = buf.lastIndexOf(NL);
        if (end < 0) {
          rest = buf;
          return;
        }
        rest = end + 1 < buf.length ? buf.subarray(end + 1) : null;
        lines(end + 1 < buf.length ? buf.subarray(0, end + 1) : buf);
      });
      res.on("close", ended);
    });
    req.on("error", (e) => {
      session.error = e.code ?? e.message;
      if (session.id === null) reject(e);
      ended();
    });
    req.end(transport === "sse" ? undefined : command);
  });
}

// Ends the session's stream from the client side.
export function closeEmulated(session) {
  session.request.destroy();
}
