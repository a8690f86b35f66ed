// The tab's realtime connection without React: one Centrifuge client, created on first use,
// and subscriptions shared by reference count. RealtimeProvider puts one in a context whose
// value never changes, so effects that depend on it run once per mount, never per reconnect.
import {
  Centrifuge,
  State,
  type Options,
  type Subscription,
  type SubscriptionOptions,
} from "centrifuge";
import { resolveEndpoints, type TransportConfig } from "./transports";

export type ConnectionState = `${State}`;

export type ConnectionStatus = {
  state: ConnectionState;
  /** True once the connection has been up, so "connecting" can be shown as "reconnecting". */
  wasConnected: boolean;
  /** The transport in use ("websocket", "http_stream", "sse"), from the SDK's `connected`
   * event; null when not connected. */
  transport: string | null;
};

/** Where to connect (`url`, `transports`, `emulationEndpoint`: see transports.ts; by default
 * the WebSocket, then http_stream, then sse, on the page's origin), and how. */
export type ConnectionConfig = TransportConfig & {
  /** A connection token (JWT); rejects with the SDK's UnauthorizedError when not signed in. */
  getToken: () => Promise<string>;
  /** More SDK options (reconnect delays, debug...). */
  options?: Partial<Options>;
};

// Every subscription asks to be recoverable: the gateway decides per namespace (force_recovery)
// and ignores the flag; Centrifugo honours it where the namespace allows recovery. A
// recoverable subscription keeps its offset and epoch across reconnects and the SDK asks for
// what it missed. (`positioned` is left out: the gateway does not implement positioning.)
const SUBSCRIPTION_OPTIONS: Partial<SubscriptionOptions> = { recoverable: true };

export class RealtimeConnection {
  private centrifuge: Centrifuge | null = null;
  private readonly users = new Map<string, number>();
  private readonly listeners = new Set<(status: ConnectionStatus) => void>();
  private providers = 0;
  status: ConnectionStatus = { state: "disconnected", wasConnected: false, transport: null };

  constructor(private readonly config: ConnectionConfig) {}

  /** The tab's client, created on first use and connected if it is not (first use, or after
   * signing in); null outside a browser (server rendering). */
  client(): Centrifuge | null {
    if (typeof window === "undefined") return null;
    if (!this.centrifuge) {
      const { url, transports, emulationEndpoint, options } = this.config;
      const endpoints = resolveEndpoints(
        { url, transports, emulationEndpoint: emulationEndpoint ?? options?.emulationEndpoint },
        window.location,
      );
      const c = new Centrifuge(endpoints.endpoint, {
        ...options,
        ...(endpoints.emulationEndpoint ? { emulationEndpoint: endpoints.emulationEndpoint } : {}),
        getToken: () => this.config.getToken(),
      });
      c.on("state", (ctx) => {
        const state = ctx.newState as ConnectionState;
        // "connected" is taken from the `connected` event, which the SDK emits right after this
        // one and which alone names the transport: one status change per connect, not two.
        if (state === "connected") return;
        this.setStatus({ state, wasConnected: this.status.wasConnected, transport: null });
      });
      c.on("connected", (ctx) => {
        this.setStatus({ state: "connected", wasConnected: true, transport: ctx.transport });
      });
      this.centrifuge = c;
    }
    if (this.centrifuge.state === State.Disconnected) this.centrifuge.connect();
    return this.centrifuge;
  }

  /** The subscription to `channel` shared by every user of it; subscribed while at least one
   * has not released it. It is the same object across reconnects, so the SDK recovers it. */
  acquire(channel: string): Subscription | null {
    const c = this.client();
    if (!c) return null;
    this.users.set(channel, (this.users.get(channel) ?? 0) + 1);
    const sub = c.getSubscription(channel) ?? c.newSubscription(channel, SUBSCRIPTION_OPTIONS);
    if (sub.state === "unsubscribed") sub.subscribe();
    return sub;
  }

  /** One user of `channel` is done; the last one unsubscribes. */
  release(channel: string): void {
    const left = (this.users.get(channel) ?? 1) - 1;
    if (left > 0) {
      this.users.set(channel, left);
      return;
    }
    this.users.delete(channel);
    // Checked again after the current commit: React runs an unmounting component's cleanup
    // just before the effects of one mounting in the same commit (a page change, Strict
    // Mode's second run), and a channel taken over that way keeps its subscription.
    queueMicrotask(() => {
      if (this.users.has(channel)) return;
      const sub = this.centrifuge?.getSubscription(channel);
      if (sub) {
        sub.unsubscribe();
        this.centrifuge?.removeSubscription(sub);
      }
    });
  }

  /** Call `listener` on every state change; returns the function that stops it. */
  watch(listener: (status: ConnectionStatus) => void): () => void {
    this.listeners.add(listener);
    listener(this.status);
    return () => {
      this.listeners.delete(listener);
    };
  }

  /** A provider mounts; the returned function unmounts it, and the connection closes when no
   * provider remains (checked after the commit, for Strict Mode's unmount-and-mount). */
  attach(): () => void {
    this.providers += 1;
    return () => {
      this.providers -= 1;
      queueMicrotask(() => {
        if (this.providers === 0) this.centrifuge?.disconnect();
      });
    };
  }

  private setStatus(status: ConnectionStatus): void {
    const { state, wasConnected, transport } = this.status;
    const same =
      status.state === state &&
      status.wasConnected === wasConnected &&
      status.transport === transport;
    if (same) return;
    this.status = status;
    for (const listener of this.listeners) listener(status);
  }
}
