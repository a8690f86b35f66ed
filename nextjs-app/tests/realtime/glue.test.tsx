// lib/realtime (provider and hooks) in jsdom against a real gateway: a reconnect must not
// touch the subscriptions, so the SDK recovers them.
import { Centrifuge, Subscription } from "centrifuge";
import { afterEach, describe, expect, it, vi } from "vitest";
import { RealtimeConnection } from "@/lib/realtime/connection";
import { disconnect, presence, publish } from "@/lib/realtime/server";
import {
  ConnectionSpy,
  HISTORY_SIZE,
  PresenceProbe,
  SubscriptionProbe,
  renderWith,
  seen,
  unique,
  until,
  otherClient,
  type Seen,
} from "./harness";

// A server-side disconnect the SDK reconnects after (codes 3000-3499 reconnect).
const FORCE_RECONNECT = 3011;

afterEach(() => vi.restoreAllMocks());

function subscriptionOf(s: Seen, channel: string): Subscription | null {
  return s.connections[0]?.client()?.getSubscription(channel) ?? null;
}

async function publishMany(channel: string, from: number, count: number): Promise<void> {
  for (let n = from; n < from + count; n++) await publish(channel, { n });
}

/** Drop the connection from the server side; resolves once the SDK is reconnecting. */
async function forceReconnect(user: string, s: Seen): Promise<void> {
  const before = s.states.length;
  await disconnect(user, FORCE_RECONNECT, "force reconnect");
  await until(() => expect(s.states.slice(before)).toContain("connecting"));
}

const offsets = (s: Seen) => s.publications.map((p) => p.offset);
const numbers = (s: Seen) => s.publications.map((p) => p.data.n);

describe("RealtimeProvider", () => {
  it("keeps one context value while the connection state changes", async () => {
    const user = unique("stable");
    const channel = unique("glue:stable");
    const created = vi.spyOn(Centrifuge.prototype, "newSubscription");
    const acquired = vi.spyOn(RealtimeConnection.prototype, "acquire");
    const s = seen();
    renderWith(
      user,
      <>
        <ConnectionSpy into={s} />
        <SubscriptionProbe channel={channel} into={s} />
        <PresenceProbe channel={channel} into={s} />
      </>,
    );
    await until(() => expect(s.status?.state).toBe("subscribed"));
    const sub = subscriptionOf(s, channel);
    await forceReconnect(user, s);
    await until(() => expect(s.states.at(-1)).toBe("connected"));
    await until(() => expect(s.status?.wasRecovering).toBe(true));

    expect(s.states).toEqual(["disconnected", "connecting", "connected", "connecting", "connected"]);
    expect(new Set(s.connections).size).toBe(1); // one value across every render
    expect(s.connections.length).toBeGreaterThanOrEqual(s.states.length);
    expect(acquired).toHaveBeenCalledTimes(2); // each hook's effect ran once
    expect(created).toHaveBeenCalledTimes(1); // and shared one subscription
    expect(subscriptionOf(s, channel)).toBe(sub);
  });
});

describe("useConnectionState", () => {
  it("tells the transport in use: the WebSocket, first in the default list; none while away", async () => {
    const user = unique("transport");
    const s = seen();
    renderWith(user, <ConnectionSpy into={s} />);
    await until(() => expect(s.states.at(-1)).toBe("connected"));
    expect(s.transports).toEqual([null, "websocket"]);

    await forceReconnect(user, s);
    expect(s.transports.at(-1)).toBeNull();
    await until(() => expect(s.states.at(-1)).toBe("connected"));
    expect(s.transports).toEqual([null, "websocket", null, "websocket"]);
  });

  it("says http_stream over the gateway's HTTP-streaming endpoint, and recovers over it", async () => {
    const user = unique("http-stream");
    const channel = unique("glue:http-stream");
    const s = seen();
    // Commands after connect (the subscribe) go through the emulation endpoint.
    renderWith(
      user,
      <>
        <ConnectionSpy into={s} />
        <SubscriptionProbe channel={channel} into={s} />
      </>,
      { transports: ["http_stream"] },
    );
    await until(() => expect(s.status?.state).toBe("subscribed"));
    expect(s.transports).toEqual([null, "http_stream"]);
    await publishMany(channel, 1, 1);
    await until(() => expect(s.publications).toHaveLength(1));

    await forceReconnect(user, s);
    await publishMany(channel, 2, 2);
    await until(() => expect(numbers(s)).toEqual([1, 2, 3]));
    expect(s.status).toMatchObject({ wasRecovering: true, recovered: true });
    expect(s.transports).toEqual([null, "http_stream", null, "http_stream"]);
  });
});

describe("useSubscription", () => {
  it("recovers what was published during a server-forced reconnect, on the same Subscription", async () => {
    const user = unique("recover");
    const channel = unique("glue:recover");
    const created = vi.spyOn(Centrifuge.prototype, "newSubscription");
    const s = seen();
    renderWith(
      user,
      <>
        <ConnectionSpy into={s} />
        <SubscriptionProbe channel={channel} into={s} />
      </>,
    );
    await until(() => expect(s.status?.state).toBe("subscribed"));
    await publishMany(channel, 1, 2);
    await until(() => expect(s.publications).toHaveLength(2));
    const sub = subscriptionOf(s, channel);

    const dropped = performance.now();
    await forceReconnect(user, s);
    await publishMany(channel, 3, HISTORY_SIZE - 1); // within the history: recoverable
    expect(s.states.at(-1)).toBe("connecting"); // they were published while it was away
    await until(() => expect(s.publications).toHaveLength(HISTORY_SIZE + 1));

    expect(numbers(s)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(offsets(s)).toEqual([1, 2, 3, 4, 5, 6]); // in order, each once
    expect(s.publications.every((p) => !p.fromHistory)).toBe(true);
    expect(s.status).toMatchObject({ state: "subscribed", wasRecovering: true, recovered: true });
    expect(s.events).not.toContain(`gap ${channel}`);
    expect(subscriptionOf(s, channel)).toBe(sub);
    expect(created).toHaveBeenCalledTimes(1);
    const lastIn = (s.arrivals.at(-1) ?? 0) - dropped;
    console.info(
      `forced reconnect: ${HISTORY_SIZE - 1} recovered ${lastIn.toFixed(0)} ms after the ` +
        "disconnect (the SDK waits 1000-1500 ms before reconnecting here)",
    );
  });

  it("recovers after the browser goes offline and back online", async () => {
    const user = unique("offline");
    const channel = unique("glue:offline");
    const s = seen();
    renderWith(
      user,
      <>
        <ConnectionSpy into={s} />
        <SubscriptionProbe channel={channel} into={s} />
      </>,
    );
    await until(() => expect(s.status?.state).toBe("subscribed"));
    await publishMany(channel, 1, 1);
    await until(() => expect(s.publications).toHaveLength(1));
    const sub = subscriptionOf(s, channel);

    window.dispatchEvent(new Event("offline")); // the SDK closes its socket
    await until(() => expect(s.states.at(-1)).toBe("connecting"));
    await publishMany(channel, 2, 3);
    const online = performance.now();
    window.dispatchEvent(new Event("online")); // and reconnects at once
    await until(() => expect(s.publications).toHaveLength(4));
    const lastIn = (s.arrivals.at(-1) ?? 0) - online;
    console.info(`offline/online: 3 recovered ${lastIn.toFixed(1)} ms after the online event`);

    expect(offsets(s)).toEqual([1, 2, 3, 4]);
    expect(s.status).toMatchObject({ wasRecovering: true, recovered: true });
    expect(subscriptionOf(s, channel)).toBe(sub);
  });

  it("calls onGap when more than the history was missed, then reads history again", async () => {
    const user = unique("gap");
    const channel = unique("glue:gap");
    const s = seen();
    renderWith(
      user,
      <>
        <ConnectionSpy into={s} />
        <SubscriptionProbe channel={channel} into={s} history={3} />
      </>,
    );
    await until(() => expect(s.status?.state).toBe("subscribed"));
    await publishMany(channel, 1, 1);
    await until(() => expect(s.events).toEqual(["pub 1"]));

    await forceReconnect(user, s);
    await publishMany(channel, 2, HISTORY_SIZE + 3); // offsets 2..9: 2..4 fall out of history
    await until(() => expect(s.events).toHaveLength(5));
    await publishMany(channel, 10, 1);
    await until(() => expect(s.events).toHaveLength(6));

    expect(s.events).toEqual([
      "pub 1",
      `gap ${channel}`, // first, so the app can clear what it shows
      "history 7", // then the last 3, oldest first
      "history 8",
      "history 9",
      "pub 10",
    ]);
    expect(s.status).toMatchObject({ state: "subscribed", wasRecovering: true, recovered: false });
  });

  it("delivers history on join first, in order, then live publications, each once", async () => {
    const channel = unique("glue:history");
    await publishMany(channel, 1, 4);
    const s = seen();
    renderWith(unique("history"), <SubscriptionProbe channel={channel} into={s} history={2} />);
    await until(() => expect(s.events).toEqual(["history 3", "history 4"]));
    await publishMany(channel, 5, 2);
    await until(() => expect(s.events).toHaveLength(4));
    expect(s.events).toEqual(["history 3", "history 4", "pub 5", "pub 6"]);
    expect(s.status).toMatchObject({ recoverable: true, wasRecovering: false });
  });

  it("shares one subscription between components; the last to unmount unsubscribes", async () => {
    const user = unique("shared");
    const channel = unique("glue:shared");
    const created = vi.spyOn(Centrifuge.prototype, "newSubscription");
    const a = seen();
    const b = seen();
    const tree = (showA: boolean, showB: boolean) => (
      <>
        <ConnectionSpy into={a} />
        {showA && <SubscriptionProbe channel={channel} into={a} />}
        {showB && <SubscriptionProbe channel={channel} into={b} />}
      </>
    );
    const view = renderWith(user, tree(true, true));
    await until(() => expect(a.status?.state).toBe("subscribed"));
    await until(() => expect(b.status?.state).toBe("subscribed"));
    expect(created).toHaveBeenCalledTimes(1);
    const sub = subscriptionOf(a, channel)!;
    await until(async () => expect(Object.keys(await presence(channel))).toHaveLength(1));

    view.rerender(tree(false, true));
    await publishMany(channel, 1, 1);
    await until(() => expect(b.publications).toHaveLength(1));
    expect(sub.state).toBe("subscribed");
    expect(subscriptionOf(a, channel)).toBe(sub);

    view.rerender(tree(false, false));
    await until(() => expect(sub.state).toBe("unsubscribed"));
    expect(subscriptionOf(a, channel)).toBeNull();
    await until(async () => expect(await presence(channel)).toEqual({}));

    view.rerender(tree(true, false)); // a new user starts afresh
    await until(() => expect(subscriptionOf(a, channel)?.state).toBe("subscribed"));
    expect(subscriptionOf(a, channel)).not.toBe(sub);
    expect(created).toHaveBeenCalledTimes(2);
  });
});

describe("usePresence", () => {
  it("reads presence on (re)subscribe only; joins and leaves update it in between", async () => {
    const user = unique("presence");
    const channel = unique("glue:presence");
    const reads = vi.spyOn(Subscription.prototype, "presence");
    const s = seen();
    renderWith(
      user,
      <>
        <ConnectionSpy into={s} />
        <PresenceProbe channel={channel} into={s} />
      </>,
    );
    const users = () => (s.members ?? []).map((m) => m.user).sort();
    await until(() => expect(users()).toEqual([user]));
    expect(reads).toHaveBeenCalledTimes(1);

    const other = otherClient("zz-other");
    try {
      const otherSub = other.newSubscription(channel);
      otherSub.subscribe();
      await until(() => expect(users()).toEqual([user, "zz-other"]));
      otherSub.unsubscribe();
      await until(() => expect(users()).toEqual([user]));
    } finally {
      other.disconnect();
    }
    expect(reads).toHaveBeenCalledTimes(1); // join and leave pushes, no reads

    await forceReconnect(user, s);
    await until(() => expect(s.states.at(-1)).toBe("connected"));
    await until(() => expect(reads).toHaveBeenCalledTimes(2)); // once, on the resubscribe
    await until(() => expect(users()).toEqual([user]));
    expect(reads).toHaveBeenCalledTimes(2);
  });
});
