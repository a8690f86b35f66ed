// What the glue tests share: the gateway under test (from the environment), tokens, a provider
// wrapper, and probe components that record what the hooks give them.
import { createHmac } from "node:crypto";
import { render } from "@testing-library/react";
import { Centrifuge } from "centrifuge";
import type { ReactNode } from "react";
import { vi } from "vitest";
import WebSocket from "ws";
import {
  RealtimeProvider,
  useConnectionState,
  usePresence,
  useRealtimeConnection,
  useSubscription,
  type ConnectionState,
  type Gap,
  type Member,
  type Publication,
  type RealtimeConnection,
  type RealtimeProviderProps,
  type SubscriptionStatus,
} from "@/lib/realtime";

function env(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run these through tests/integration/test_realtime_glue_ts.py`);
  }
  return value;
}

export const GATEWAY_URL = env("GATEWAY_URL");
const WS_SECRET = env("WS_SECRET");
env("GATEWAY_API_KEY"); // lib/realtime/server.ts calls the server API with it
export const WS_URL = `${GATEWAY_URL.replace(/^http/, "ws")}/connection/websocket`;

/** Namespace `glue` on the gateway under test: presence, join/leave, recovery, history of 5. */
export const HISTORY_SIZE = 5;

let serial = 0;
/** A channel (and a user) no other test uses. */
export function unique(prefix: string): string {
  serial += 1;
  return `${prefix}-${serial}-${Math.random().toString(36).slice(2, 8)}`;
}

/** A connection token for `user` (HS256). Signed with node:crypto rather than lib/tokens.ts:
 * jose refuses jsdom's Uint8Array (another realm's class) as a key. */
export function tokenFor(user: string): () => Promise<string> {
  return async () => {
    const part = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
    const claims = { sub: user, exp: Math.floor(Date.now() / 1000) + 300 };
    const unsigned = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
    const signature = createHmac("sha256", WS_SECRET).update(unsigned).digest("base64url");
    return `${unsigned}.${signature}`;
  };
}

const SDK_OPTIONS = {
  // jsdom's own WebSocket (undici's) cannot fire its events in vitest's jsdom: they are
  // jsdom's Event class, which Node's EventTarget refuses. `ws` brings its own events.
  websocket: WebSocket,
  // Reconnects wait at least a second: a test publishes "while disconnected" in that window.
  minReconnectDelay: 1000,
  maxReconnectDelay: 1500,
};

/** `ui` in a provider connected as `user`; `props` add to the provider's (transports...). */
export function renderWith(
  user: string,
  ui: ReactNode,
  props: Omit<RealtimeProviderProps, "children"> = {},
) {
  const wrap = (children: ReactNode) => (
    <RealtimeProvider getToken={tokenFor(user)} options={SDK_OPTIONS} {...props}>
      {children}
    </RealtimeProvider>
  );
  const result = render(wrap(ui));
  return { ...result, rerender: (next: ReactNode) => result.rerender(wrap(next)) };
}

/** Everything a component saw, render by render. */
export type Seen = {
  connections: RealtimeConnection[];
  states: ConnectionState[];
  /** useConnectionState's transport, each change. */
  transports: (string | null)[];
  status?: SubscriptionStatus;
  publications: Publication<Msg>[];
  /** performance.now() of each publication's arrival. */
  arrivals: number[];
  events: string[];
  members?: Member[];
};
export type Msg = { n: number };

export const seen = (): Seen => ({
  connections: [],
  states: [],
  transports: [],
  publications: [],
  arrivals: [],
  events: [],
});

/** Records the connection (context value), its state and transport on every render. */
export function ConnectionSpy({ into }: { into: Seen }) {
  into.connections.push(useRealtimeConnection());
  const { state, transport } = useConnectionState();
  if (into.states.at(-1) !== state) into.states.push(state);
  if (into.transports.length === 0 || into.transports.at(-1) !== transport) {
    into.transports.push(transport);
  }
  return null;
}

/** useSubscription, recording publications and gaps in one ordered list of events. */
export function SubscriptionProbe({
  channel,
  into,
  history,
}: {
  channel: string;
  into: Seen;
  history?: number;
}) {
  into.status = useSubscription<Msg>(
    channel,
    (pub) => {
      into.publications.push(pub);
      into.arrivals.push(performance.now());
      into.events.push(`${pub.fromHistory ? "history" : "pub"} ${pub.offset}`);
    },
    { history, onGap: (gap: Gap) => into.events.push(`gap ${gap.channel}`) },
  );
  return null;
}

export function PresenceProbe({ channel, into }: { channel: string; into: Seen }) {
  into.members = usePresence(channel);
  useConnectionState(); // re-renders on every connection state change
  return null;
}

/** Wait for `check` to stop throwing (an expect() inside it). */
export const until = (check: () => void, timeout = 10_000) =>
  vi.waitFor(check, { timeout, interval: 20 });

/** A plain SDK client (another user in the channel), closed by the caller. */
export function otherClient(user: string): Centrifuge {
  const client = new Centrifuge(WS_URL, { websocket: WebSocket, getToken: tokenFor(user) });
  client.connect();
  return client;
}
