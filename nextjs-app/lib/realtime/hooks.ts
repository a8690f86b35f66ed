"use client";

// Hooks over the tab's connection (see RealtimeProvider). Payloads are typed by the caller:
//   useSubscription<ChatMessage>("chat:lobby", (msg) => ...)
import type { ClientInfo, PublicationContext, Subscription } from "centrifuge";
import { useContext, useEffect, useRef, useState } from "react";
import { RealtimeContext, type ConnectionState, type RealtimeContextValue } from "./RealtimeProvider";

function useRealtimeContext(): RealtimeContextValue {
  const ctx = useContext(RealtimeContext);
  if (!ctx) throw new Error("realtime hooks need <RealtimeProvider> above them (root layout)");
  return ctx;
}

export type Publication<T> = {
  data: T;
  offset?: number;
  /** Who published, when a browser did (absent for server API publications). */
  info?: ClientInfo;
  /** True for publications read from history on join rather than received live. */
  fromHistory: boolean;
};

export type SubscriptionOptions = {
  /** On the first subscribe, deliver up to this many past publications first (history). */
  history?: number;
};

/** The connection's state, and whether it has been connected before (to say "reconnecting"). */
export function useConnectionState(): { state: ConnectionState; reconnecting: boolean } {
  const ctx = useRealtimeContext();
  useEffect(() => {
    ctx.client(); // using the state means using the connection
  }, [ctx]);
  return { state: ctx.state, reconnecting: ctx.state === "connecting" && ctx.wasConnected };
}

/**
 * Subscribe to `channel` while the component is mounted; `onPublication` gets every
 * publication in order, each once (history on join, live ones, recovered ones after a
 * reconnect). Returns the subscription's state.
 */
export function useSubscription<T>(
  channel: string,
  onPublication: (publication: Publication<T>) => void,
  options: SubscriptionOptions = {},
): "unsubscribed" | "subscribing" | "subscribed" {
  const ctx = useRealtimeContext();
  const callback = useRef(onPublication);
  callback.current = onPublication;
  const [state, setState] = useState<"unsubscribed" | "subscribing" | "subscribed">(
    "unsubscribed",
  );
  const historyLimit = options.history ?? 0;

  useEffect(() => {
    const sub = ctx.acquire(channel);
    if (!sub) return;
    let lastOffset = 0; // deliver each offset once: history and live can overlap
    let historyLoaded = false;
    const deliver = (pub: PublicationContext, fromHistory: boolean) => {
      if (pub.offset !== undefined) {
        if (pub.offset <= lastOffset) return;
        lastOffset = pub.offset;
      }
      callback.current({ data: pub.data as T, offset: pub.offset, info: pub.info, fromHistory });
    };
    const onPub = (pub: PublicationContext) => deliver(pub, false);
    const onState = () => setState(sub.state as typeof state);
    const onSubscribed = async () => {
      onState();
      if (historyLimit > 0 && !historyLoaded) {
        historyLoaded = true;
        try {
          const history = await sub.history({ limit: historyLimit, reverse: true });
          for (const pub of history.publications.reverse()) deliver(pub, true);
        } catch {
          // no history for this channel (or not allowed): live publications still come
        }
      }
    };
    sub.on("publication", onPub);
    sub.on("subscribed", onSubscribed);
    sub.on("subscribing", onState);
    sub.on("unsubscribed", onState);
    if (sub.state === "subscribed") void onSubscribed();
    else if (sub.state === "unsubscribed") sub.subscribe();
    onState();
    return () => {
      sub.removeListener("publication", onPub);
      sub.removeListener("subscribed", onSubscribed);
      sub.removeListener("subscribing", onState);
      sub.removeListener("unsubscribed", onState);
      ctx.release(channel);
    };
  }, [ctx, channel, historyLimit]);

  return state;
}

export type Member = { client: string; user: string; info?: unknown };

/** Who is subscribed to `channel` (needs presence and join/leave on its namespace). */
export function usePresence(channel: string): Member[] {
  const ctx = useRealtimeContext();
  const [members, setMembers] = useState<Record<string, Member>>({});

  useEffect(() => {
    const sub = ctx.acquire(channel);
    if (!sub) return;
    const toMember = (info: ClientInfo): Member => ({
      client: info.client,
      user: info.user,
      info: info.connInfo,
    });
    const load = async () => {
      try {
        const result = await sub.presence();
        const next: Record<string, Member> = {};
        for (const info of Object.values(result.clients)) next[info.client] = toMember(info);
        setMembers(next);
      } catch {
        setMembers({});
      }
    };
    const onJoin = (joinCtx: { info: ClientInfo }) =>
      setMembers((prev) => ({ ...prev, [joinCtx.info.client]: toMember(joinCtx.info) }));
    const onLeave = (leaveCtx: { info: ClientInfo }) =>
      setMembers((prev) => {
        const next = { ...prev };
        delete next[leaveCtx.info.client];
        return next;
      });
    sub.on("subscribed", load); // again after every reconnect: whoever left meanwhile is gone
    sub.on("join", onJoin);
    sub.on("leave", onLeave);
    if (sub.state === "subscribed") void load();
    else if (sub.state === "unsubscribed") sub.subscribe();
    return () => {
      sub.removeListener("subscribed", load);
      sub.removeListener("join", onJoin);
      sub.removeListener("leave", onLeave);
      ctx.release(channel);
    };
  }, [ctx, channel]);

  return Object.values(members);
}

/** publish() and rpc() on the tab's connection. */
export function useRealtime() {
  const ctx = useRealtimeContext();
  return {
    /** Publish from the browser (the namespace must allow it, or have a publish hook). */
    publish: async <T>(channel: string, data: T): Promise<void> => {
      const client = ctx.client();
      if (!client) throw new Error("not in a browser");
      const sub: Subscription | null = client.getSubscription(channel);
      if (sub) await sub.publish(data);
      else await client.publish(channel, data);
    },
    /** Call the app's rpc hook (realtime.hooks.rpc) through the gateway. */
    rpc: async <Req, Res>(method: string, data: Req): Promise<Res> => {
      const client = ctx.client();
      if (!client) throw new Error("not in a browser");
      const result = await client.rpc(method, data);
      return result.data as Res;
    },
  };
}
