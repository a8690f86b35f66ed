// Which transports the tab's client tries, in order, and where. The gateway serves
// centrifuge-js's bidirectional ones beside the pages, on the same origin: a WebSocket at
// /connection/websocket and, for networks that break WebSocket upgrades (some corporate proxies,
// antivirus products, old middleboxes), HTTP-streaming and SSE responses at
// /connection/http_stream and /connection/sse, whose client→server commands are POSTed to
// /connection/emulation. Given a list, the SDK tries each transport in turn until one opens
// and keeps to it afterwards (centrifuge-js's "transport fallback" mode).
import type { TransportEndpoint } from "centrifuge";

/** The transports the gateway serves, each at /connection/<name> on the page's origin. */
export type GatewayTransport = "websocket" | "http_stream" | "sse";

/** What RealtimeProvider tries when told nothing: the WebSocket, then the two emulations. */
export const DEFAULT_TRANSPORTS: readonly GatewayTransport[] = ["websocket", "http_stream", "sse"];

/** Where http_stream and sse post client→server commands, on the page's origin. */
export const EMULATION_PATH = "/connection/emulation";

export type TransportConfig = {
  /** A WebSocket URL. Alone, it means that WebSocket only (no fallback); with `transports`,
   * it replaces the same-origin URL of the list's "websocket" entry. */
  url?: string;
  /** The transports to try, in order: a name gets the same-origin endpoint the gateway serves,
   * a `{ transport, endpoint }` object is passed to the SDK as it is. Wins over `url` alone. */
  transports?: ReadonlyArray<GatewayTransport | TransportEndpoint>;
  /** Where http_stream and sse post client commands: a path on the page's origin or a URL. */
  emulationEndpoint?: string;
};

/** As much of the page's address as is needed: window.location in a browser. */
export type PageLocation = { protocol: string; host: string };

export type Endpoints = {
  /** The Centrifuge constructor's first argument: one WebSocket URL or the fallback list. */
  endpoint: string | TransportEndpoint[];
  /** The SDK's `emulationEndpoint` option; absent with a single WebSocket URL, which posts
   * nothing. */
  emulationEndpoint?: string;
};

const isGatewayTransport = (name: string): name is GatewayTransport =>
  (DEFAULT_TRANSPORTS as readonly string[]).includes(name);

/**
 * The SDK's endpoint configuration for a page at `page`. Precedence: `transports` if given
 * (with `url`, if given, as its WebSocket's address); else `url` alone, the WebSocket only;
 * else DEFAULT_TRANSPORTS. Throws on an empty list or an unknown name (a config mistake is
 * better found on first use than as a client that never connects).
 */
export function resolveEndpoints(config: TransportConfig, page: PageLocation): Endpoints {
  if (config.transports === undefined && config.url !== undefined) {
    return { endpoint: config.url };
  }
  const secure = page.protocol === "https:";
  const httpOrigin = `${secure ? "https" : "http"}://${page.host}`;
  const wsOrigin = `${secure ? "wss" : "ws"}://${page.host}`;
  const wanted = config.transports ?? DEFAULT_TRANSPORTS;
  if (wanted.length === 0) throw new Error("realtime transports: the list is empty");
  const endpoint = wanted.map((entry): TransportEndpoint => {
    if (typeof entry !== "string") return entry;
    if (!isGatewayTransport(entry)) {
      throw new Error(
        `realtime transports: unknown transport "${entry}" (the gateway serves ` +
          `${DEFAULT_TRANSPORTS.join(", ")}; give { transport, endpoint } for another server)`,
      );
    }
    if (entry === "websocket") {
      return { transport: entry, endpoint: config.url ?? `${wsOrigin}/connection/websocket` };
    }
    return { transport: entry, endpoint: `${httpOrigin}/connection/${entry}` };
  });
  // Absolute even for a path: fetch outside a browser (tests, Node) has no page to resolve it.
  const emulationEndpoint = new URL(config.emulationEndpoint ?? EMULATION_PATH, `${httpOrigin}/`)
    .href;
  return { endpoint, emulationEndpoint };
}
