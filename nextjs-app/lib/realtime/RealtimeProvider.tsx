"use client";

// One realtime connection per browser tab, shared by every component through React context.
// Put <RealtimeProvider> in the root layout: layouts persist across client-side navigation, so
// the WebSocket survives it. Nothing here runs during server rendering: the Centrifuge client
// is created in an effect, on first use, never at module scope.
import { Centrifuge, State, UnauthorizedError, type Subscription } from "centrifuge";
import {
  createContext,
  useCallback,
  useEffect,
  useMemo,
  useRef,
  useState,
  type ReactNode,
} from "react";

export type ConnectionState = `${State}`;

export type RealtimeContextValue = {
  /** The tab's client, created on first use (null during server rendering). */
  client: () => Centrifuge | null;
  state: ConnectionState;
  /** True once the connection has been up, so "connecting" can be shown as "reconnecting". */
  wasConnected: boolean;
  /** A subscription shared by every component using `channel` (counted; see release). */
  acquire: (channel: string) => Subscription | null;
  release: (channel: string) => void;
};

export const RealtimeContext = createContext<RealtimeContextValue | null>(null);

export type RealtimeProviderProps = {
  children: ReactNode;
  /** Where to get a connection token (the auth handoff route). */
  tokenUrl?: string;
  /** The WebSocket URL; by default the same origin's /connection/websocket. */
  url?: string;
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
  url,
}: RealtimeProviderProps) {
  const clientRef = useRef<Centrifuge | null>(null);
  const counts = useRef(new Map<string, number>());
  const [state, setState] = useState<ConnectionState>("disconnected");
  const [wasConnected, setWasConnected] = useState(false);

  const client = useCallback((): Centrifuge | null => {
    if (typeof window === "undefined") return null;
    if (!clientRef.current) {
      const scheme = window.location.protocol === "https:" ? "wss" : "ws";
      const c = new Centrifuge(url ?? `${scheme}://${window.location.host}/connection/websocket`, {
        getToken: () => fetchToken(tokenUrl),
      });
      c.on("state", (ctx) => {
        setState(ctx.newState as ConnectionState);
        if (ctx.newState === State.Connected) setWasConnected(true);
      });
      clientRef.current = c;
    }
    const c = clientRef.current;
    if (c.state === State.Disconnected) c.connect(); // first use, or after signing in
    return c;
  }, [tokenUrl, url]);

  const acquire = useCallback(
    (channel: string): Subscription | null => {
      const c = client();
      if (!c) return null;
      counts.current.set(channel, (counts.current.get(channel) ?? 0) + 1);
      return c.getSubscription(channel) ?? c.newSubscription(channel);
    },
    [client],
  );

  const release = useCallback((channel: string) => {
    const left = (counts.current.get(channel) ?? 1) - 1;
    const c = clientRef.current;
    if (left > 0) {
      counts.current.set(channel, left);
      return;
    }
    counts.current.delete(channel);
    const sub = c?.getSubscription(channel);
    if (c && sub) {
      sub.unsubscribe();
      c.removeSubscription(sub);
    }
  }, []);

  // The connection lives as long as the tab: close it only when the provider goes away.
  useEffect(() => () => clientRef.current?.disconnect(), []);

  const value = useMemo(
    () => ({ client, state, wasConnected, acquire, release }),
    [client, state, wasConnected, acquire, release],
  );
  return <RealtimeContext.Provider value={value}>{children}</RealtimeContext.Provider>;
}
