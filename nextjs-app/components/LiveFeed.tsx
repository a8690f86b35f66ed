"use client";

// Connects with the centrifuge SDK inside useEffect (never at module scope: this module is
// also rendered on the server, where there is no WebSocket), subscribes and lists what comes.
import { Centrifuge, UnauthorizedError, type PublicationContext } from "centrifuge";
import { useEffect, useState } from "react";

type Post = { text: string; from: string };

async function getToken(): Promise<string> {
  const res = await fetch("/api/ws-token", { cache: "no-store" });
  if (res.status === 401) throw new UnauthorizedError("not signed in");
  if (!res.ok) throw new Error(`token request failed: ${res.status}`);
  return (await res.json()).token;
}

export function LiveFeed({ channel }: { channel: string }) {
  const [state, setState] = useState("disconnected");
  const [posts, setPosts] = useState<(Post & { offset?: number })[]>([]);

  useEffect(() => {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const client = new Centrifuge(`${scheme}://${window.location.host}/connection/websocket`, {
      getToken,
    });
    client.on("state", (ctx) => setState(ctx.newState));
    const sub = client.newSubscription(channel);
    sub.on("publication", (ctx: PublicationContext) =>
      setPosts((prev) => [...prev, { ...(ctx.data as Post), offset: ctx.offset }].slice(-100)),
    );
    sub.subscribe();
    client.connect();
    return () => client.disconnect();
  }, [channel]);

  return (
    <section>
      <p>
        Connection: <strong id="connection-state">{state}</strong>
      </p>
      <ul id="posts">
        {posts.map((post) => (
          <li key={post.offset ?? `${post.from}-${post.text}`}>
            <strong>{post.from}</strong>: {post.text}
          </li>
        ))}
      </ul>
    </section>
  );
}
