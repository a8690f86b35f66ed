"use client";

// One realtime connection per browser tab, shared by every component through React context.
// Put <RealtimeProvider> in the root layout: layouts persist across client-side navigation, so
// the WebSocket survives it. Nothing here runs during server rendering: the Centrifuge client
// is created on first use (connection.ts), never at module scope.
//
// Two contexts: RealtimeContext holds the connection object itself, created once, so effects
// that depend on it (subscriptions, presence) run once per mount and a subscription outlives
// reconnects, which is what lets the SDK recover it. ConnectionStatusContext holds the state,
// which changes on every (re)connect; only components that show it re-render.
import { UnauthorizedError, type Options } from "centrifuge";
import { createContext, useEffect, useRef, useState, type ReactNode } from "react";
import { RealtimeConnection, type ConnectionStatus } from "./connection";
import type { TransportConfig } from "./transports";

export const RealtimeContext = createContext<RealtimeConnection | null>(null);
export const ConnectionStatusContext = createContext<ConnectionStatus | null>(null);

/** Where to connect, read once: by default the same origin's WebSocket, then HTTP-streaming,
 * then SSE, which the SDK tries in turn until one opens. `transports` replaces the list (names,
 * or `{ transport, endpoint }` objects for another server); `url` alone means that WebSocket
 * only, as before fallback existed, and with `transports` it is the list's WebSocket address;
 * `emulationEndpoint` is where http_stream and sse post commands (/connection/emulation). */
export type RealtimeProviderProps = TransportConfig & {
  children: ReactNode;
  /** Where to get a connection token (the auth handoff route); 401 means not signed in. */
  tokenUrl?: string;
  /** Or how: replaces tokenUrl (an app with its own auth, tests). */
  getToken?: () => Promise<string>;
  /** More SDK options (reconnect delays, debug...). Read once. */
  options?: Partial<Options>;
};

async function fetchToken(tokenUrl: string): Promise<string> {
  const res = await fetch(tokenUrl, { cache: "no-store", credentials: "same-origin" });
  if (res.status === 401 || res.status === 403) throw new UnauthorizedError("not signed in");
  if (!res.ok) throw new Error(`token request failed: HTTP ${res.status}`);
  const body = (await res.json()) as { token?: string };
  if (!body.token) throw new Error("token response without a token");
  return body.token;
}

export function RealtimeProvider({
  children,
  tokenUrl = "/api/ws-token",
  getToken,
  url,
  transports,
  emulationEndpoint,
  options,
}: RealtimeProviderProps) {
  // Tokens are asked for later (each connect): always with the latest props.
  const tokenSource = useRef({ tokenUrl, getToken });
  tokenSource.current = { tokenUrl, getToken };
  const [connection] = useState(
    () =>
      new RealtimeConnection({
        url,
        transports,
        emulationEndpoint,
        options,
        getToken: () => {
          const { tokenUrl: from, getToken: get } = tokenSource.current;
          return get ? get() : fetchToken(from);
        },
      }),
  );
  const [status, setStatus] = useState<ConnectionStatus>(connection.status);

  useEffect(() => connection.watch(setStatus), [connection]);
  // The connection lives as long as the tab: it closes only when the provider goes away.
  useEffect(() => connection.attach(), [connection]);

  return (
    <RealtimeContext.Provider value={connection}>
      <ConnectionStatusContext.Provider value={status}>{children}</ConnectionStatusContext.Provider>
    </RealtimeContext.Provider>
  );
}
