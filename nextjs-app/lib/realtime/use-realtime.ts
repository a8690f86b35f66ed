"use client";

// React hooks over the tab's connection (RealtimeProvider). Payloads are typed by the caller:
//   useSubscription<ChatMessage>("chat:lobby", (msg) => ...)
import type {
  ClientInfo,
  JoinContext,
  LeaveContext,
  PublicationContext,
  StreamPosition,
  SubscribedContext,
  SubscriptionStateContext,
} from "centrifuge";
import { useContext, useEffect, useMemo, useRef, useState } from "react";
import type { ConnectionState, RealtimeConnection } from "./connection";
import { ConnectionStatusContext, RealtimeContext } from "./RealtimeProvider";

const NO_PROVIDER = "realtime hooks need <RealtimeProvider> above them (root layout)";

/** The tab's connection (stable: the same object for the provider's whole life). For code
 * outside these hooks: `client()` is the Centrifuge client, `acquire`/`release` share
 * subscriptions with the hooks. */
export function useRealtimeConnection(): RealtimeConnection {
  const connection = useContext(RealtimeContext);
  if (!connection) throw new Error(NO_PROVIDER);
  return connection;
}

export type Publication<T> = {
  data: T;
  offset?: number;
  /** Who published, when a browser did (absent for server API publications). */
  info?: ClientInfo;
  /** True for publications read from history (on join, or after a gap) rather than pushed. */
  fromHistory: boolean;
};

/** The stream broke: some publications were missed and could not be recovered (more than the
 * channel's history, or its history expired or was reset). */
export type Gap = { channel: string; position?: StreamPosition };

export type SubscriptionOptions = {
  /** Deliver up to this many past publications first, from history: on the first subscribe,
   * and again after a gap (after onGap, so the app can clear what it shows first). */
  history?: number;
  /** Called after a gap, before anything else is delivered: reload or clear what depends on
   * the missed publications. */
  onGap?: (gap: Gap) => void;
};

export type SubscriptionStatus = {
  state: "unsubscribed" | "subscribing" | "subscribed";
  /** The server recovers this subscription's missed publications after a reconnect. */
  recoverable: boolean;
  /** The last subscribe asked to recover (a resubscribe after a reconnect). */
  wasRecovering: boolean;
  /** ...and got every missed publication (they are delivered right after). */
  recovered: boolean;
};

/** The connection's state, whether it has been connected before (to say "reconnecting"), and
 * the transport in use: "websocket", or "http_stream" / "sse" where WebSocket is blocked; null
 * when not connected. */
export function useConnectionState(): {
  state: ConnectionState;
  reconnecting: boolean;
  transport: string | null;
} {
  const connection = useRealtimeConnection();
  const status = useContext(ConnectionStatusContext);
  if (!status) throw new Error(NO_PROVIDER);
  useEffect(() => {
    connection.client(); // showing the state means using the connection
  }, [connection]);
  return {
    state: status.state,
    reconnecting: status.state === "connecting" && status.wasConnected,
    transport: status.transport,
  };
}

/**
 * Subscribe to `channel` while the component is mounted; `onPublication` gets every
 * publication in order, each once: history first (with `history`), then live ones, and after a
 * reconnect the ones missed meanwhile (the SDK recovers them: the subscription outlives the
 * reconnect). When they cannot be recovered, `onGap` is called (then history again).
 */
export function useSubscription<T>(
  channel: string,
  onPublication: (publication: Publication<T>) => void,
  options: SubscriptionOptions = {},
): SubscriptionStatus {
  const connection = useRealtimeConnection();
  const callbacks = useRef({ onPublication, onGap: options.onGap });
  callbacks.current = { onPublication, onGap: options.onGap };
  const [status, setStatus] = useState<SubscriptionStatus>({
    state: "unsubscribed",
    recoverable: false,
    wasRecovering: false,
    recovered: false,
  });
  const historyLimit = options.history ?? 0;

  useEffect(() => {
    const sub = connection.acquire(channel);
    if (!sub) return;
    let active = true;
    // The last offset delivered: history and pushes overlap while history is read.
    let last: number | null = null;
    // Pushes held while history is read, delivered after it.
    let held: PublicationContext[] | null = null;
    // History is read once subscribed (a call made earlier could time out while connecting).
    let historyDue = historyLimit > 0;

    const deliver = (pub: PublicationContext, fromHistory: boolean) => {
      if (pub.offset !== undefined) {
        if (last !== null && pub.offset <= last) return;
        last = pub.offset;
      }
      callbacks.current.onPublication({
        data: pub.data as T,
        offset: pub.offset,
        info: pub.info,
        fromHistory,
      });
    };
    const loadHistory = async () => {
      held = [];
      try {
        const result = await sub.history({ limit: historyLimit, reverse: true });
        if (active) for (const pub of result.publications.reverse()) deliver(pub, true);
      } catch {
        // no history for this channel (or not allowed): pushes still come
      } finally {
        const pending: PublicationContext[] = held ?? [];
        held = null;
        if (active) for (const pub of pending) deliver(pub, false);
      }
    };
    const onPublication = (pub: PublicationContext) => {
      if (held) held.push(pub);
      else deliver(pub, false);
    };
    const onState = (ctx: SubscriptionStateContext) =>
      setStatus((prev) => ({ ...prev, state: ctx.newState as SubscriptionStatus["state"] }));
    const onSubscribed = (ctx: SubscribedContext) => {
      setStatus({
        state: "subscribed",
        recoverable: ctx.recoverable,
        wasRecovering: ctx.wasRecovering,
        recovered: ctx.recovered,
      });
      // Recovered publications are delivered after this event: nothing to do for them.
      if (ctx.wasRecovering && !ctx.recovered) {
        last = null; // a new epoch starts its offsets again
        callbacks.current.onGap?.({ channel, position: ctx.streamPosition });
        historyDue = historyLimit > 0;
      }
      if (historyDue) {
        historyDue = false;
        void loadHistory();
      }
    };

    sub.on("publication", onPublication);
    sub.on("state", onState);
    sub.on("subscribed", onSubscribed);
    setStatus((prev) => ({ ...prev, state: sub.state as SubscriptionStatus["state"] }));
    if (historyDue && sub.state === "subscribed") {
      historyDue = false;
      void loadHistory();
    }
    return () => {
      active = false;
      sub.removeListener("publication", onPublication);
      sub.removeListener("state", onState);
      sub.removeListener("subscribed", onSubscribed);
      connection.release(channel);
    };
  }, [connection, channel, historyLimit]);

  return status;
}

export type Member = { client: string; user: string; info?: unknown };

/** Who is subscribed to `channel` (needs presence and join/leave on its namespace). Read in
 * full on each (re)subscribe, since joins and leaves during a disconnect are not recovered;
 * in between, join and leave pushes update it. */
export function usePresence(channel: string): Member[] {
  const connection = useRealtimeConnection();
  const [members, setMembers] = useState<Record<string, Member>>({});

  useEffect(() => {
    const sub = connection.acquire(channel);
    if (!sub) return;
    let active = true;
    // Joins and leaves that arrive while presence is read, applied after it.
    let held: ((m: Record<string, Member>) => Record<string, Member>)[] | null = null;
    const toMember = (info: ClientInfo): Member => ({
      client: info.client,
      user: info.user,
      info: info.connInfo,
    });
    const apply = (change: (m: Record<string, Member>) => Record<string, Member>) => {
      if (held) held.push(change);
      else setMembers(change);
    };
    const load = async () => {
      held = [];
      let next: Record<string, Member> = {};
      try {
        const result = await sub.presence();
        for (const info of Object.values(result.clients)) next[info.client] = toMember(info);
      } catch {
        // not subscribed any more, or presence not allowed: nobody to show
      }
      for (const change of held ?? []) next = change(next);
      held = null;
      if (active) setMembers(next);
    };
    const onJoin = (ctx: JoinContext) =>
      apply((prev) => ({ ...prev, [ctx.info.client]: toMember(ctx.info) }));
    const onLeave = (ctx: LeaveContext) =>
      apply((prev) => {
        const next = { ...prev };
        delete next[ctx.info.client];
        return next;
      });
    const onSubscribed = () => void load();
    sub.on("subscribed", onSubscribed);
    sub.on("join", onJoin);
    sub.on("leave", onLeave);
    if (sub.state === "subscribed") void load();
    return () => {
      active = false;
      sub.removeListener("subscribed", onSubscribed);
      sub.removeListener("join", onJoin);
      sub.removeListener("leave", onLeave);
      connection.release(channel);
    };
  }, [connection, channel]);

  return useMemo(() => Object.values(members), [members]);
}

/** publish() and rpc() on the tab's connection (the same functions on every render). */
export function useRealtime() {
  const connection = useRealtimeConnection();
  return useMemo(
    () => ({
      /** Publish from the browser (the namespace must allow it, or have a publish hook). */
      publish: async <T>(channel: string, data: T): Promise<void> => {
        const client = connection.client();
        if (!client) throw new Error("not in a browser");
        const sub = client.getSubscription(channel);
        if (sub) await sub.publish(data);
        else await client.publish(channel, data);
      },
      /** Call the app's rpc hook (realtime.hooks.rpc) through the gateway. */
      rpc: async <Req, Res>(method: string, data: Req): Promise<Res> => {
        const client = connection.client();
        if (!client) throw new Error("not in a browser");
        const result = await client.rpc(method, data);
        return result.data as Res;
      },
    }),
    [connection],
  );
}
