"use client";

// Lists what is published to `channel`, over the tab's shared connection (RealtimeProvider).
import { useState } from "react";
import { ConnectionBadge } from "@/components/ConnectionBadge";
import { useSubscription } from "@/lib/realtime";

type Post = { text: string; from: string };

export function LiveFeed({ channel }: { channel: string }) {
  const [posts, setPosts] = useState<(Post & { offset?: number })[]>([]);
  useSubscription<Post>(channel, (pub) =>
    setPosts((prev) => [...prev, { ...pub.data, offset: pub.offset }].slice(-100)),
  );
  return (
    <section>
      <p>
        Connection: <ConnectionBadge />
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
