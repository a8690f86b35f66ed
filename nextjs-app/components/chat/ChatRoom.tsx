"use client";

import { useCallback, useEffect, useRef, useState, useTransition, type FormEvent } from "react";
import { sendMessage } from "@/app/chat/actions";
import { ConnectionBadge } from "@/components/ConnectionBadge";
import { usePresence, useRealtime, useSubscription, type Publication } from "@/lib/realtime";
import type { ChatMessage, Typing } from "./types";

type Me = { id: string; name: string };

function nameOf(info: unknown, fallback: string): string {
  const name = (info as { name?: unknown } | undefined)?.name;
  return typeof name === "string" ? name : fallback;
}

export function ChatRoom({ room, me }: { room: string; me: Me }) {
  const [messages, setMessages] = useState<ChatMessage[]>([]);
  const [typing, setTyping] = useState<Record<string, { name: string; until: number }>>({});
  const [draft, setDraft] = useState("");
  const [pending, startTransition] = useTransition();
  const [dice, setDice] = useState<number | null>(null);
  const { publish, rpc } = useRealtime();
  const lastTypingSent = useRef(0);

  const [gapAt, setGapAt] = useState<number | null>(null);
  // Each message arrives once, in order: the last 50 from history on join, live ones, and after
  // a reconnect the ones missed meanwhile (recovered by the SDK: no history re-read). No
  // de-duplication by id: a duplicate would be a bug to see, not to hide. When messages were
  // missed beyond the room's history, the hook calls onGap and then reads the last 50 again.
  const chat = useSubscription<ChatMessage>(
    `chat:${room}`,
    useCallback((pub: Publication<ChatMessage>) => {
      setMessages((prev) => [...prev, pub.data].slice(-200));
    }, []),
    {
      history: 50,
      onGap: useCallback(() => {
        setMessages([]);
        setGapAt(Date.now());
      }, []),
    },
  );
  useSubscription<Typing>(`typing:${room}`, (pub) => {
    const who = pub.info;
    if (!who || who.user === me.id) return;
    setTyping((prev) => ({
      ...prev,
      [who.user]: { name: nameOf(who.connInfo, who.user), until: pub.data.typing ? Date.now() + 3000 : 0 },
    }));
  });
  const members = usePresence(`chat:${room}`);

  useEffect(() => {
    const timer = setInterval(() => {
      setTyping((prev) => {
        const now = Date.now();
        const alive = Object.entries(prev).filter(([, t]) => t.until > now);
        return alive.length === Object.keys(prev).length ? prev : Object.fromEntries(alive);
      });
    }, 500);
    return () => clearInterval(timer);
  }, []);

  const onType = (value: string) => {
    setDraft(value);
    if (Date.now() - lastTypingSent.current > 1500) {
      lastTypingSent.current = Date.now();
      publish<Typing>(`typing:${room}`, { typing: true }).catch(() => {});
    }
  };

  const onSubmit = (event: FormEvent) => {
    event.preventDefault();
    const text = draft;
    if (!text.trim()) return;
    setDraft("");
    lastTypingSent.current = 0;
    publish<Typing>(`typing:${room}`, { typing: false }).catch(() => {});
    startTransition(async () => {
      await sendMessage(room, text);
    });
  };

  const names = [...new Set(members.map((m) => nameOf(m.info, m.user)))].sort();
  const typers = Object.values(typing).map((t) => t.name);

  return (
    <div className="chat">
      <div className="chat-head">
        <h1>#{room}</h1>
        <ConnectionBadge />
      </div>
      <aside className="members">
        <h2>Here now ({names.length})</h2>
        <ul id="members">
          {names.map((name) => (
            <li key={name}>{name === me.name ? `${name} (you)` : name}</li>
          ))}
        </ul>
        <button
          type="button"
          onClick={async () => setDice((await rpc<object, { value: number }>("dice", {})).value)}
        >
          Roll a die (RPC)
        </button>
        {dice !== null && <p id="dice">You rolled {dice}.</p>}
      </aside>
      <section className="messages">
        {gapAt !== null && (
          <p className="muted" id="gap-notice">
            Some messages sent while you were away could not be recovered; these are the latest.
          </p>
        )}
        <ol
          id="messages"
          data-state={chat.state}
          data-was-recovering={String(chat.wasRecovering)}
          data-recovered={String(chat.recovered)}
        >
          {messages.map((m) => (
            <li key={m.id} className={m.from.id === me.id ? "mine" : ""}>
              <strong>{m.from.name}</strong> <span className="muted">{new Date(m.at).toLocaleTimeString()}</span>
              <div className="text">{m.text}</div>
            </li>
          ))}
        </ol>
        <p className="typing muted" id="typing">
          {typers.length > 0 ? `${typers.join(", ")} ${typers.length > 1 ? "are" : "is"} typing…` : " "}
        </p>
        <form onSubmit={onSubmit}>
          <input
            id="message-input"
            value={draft}
            onChange={(e) => onType(e.target.value)}
            placeholder="Write a message"
            maxLength={1000}
            autoComplete="off"
          />{" "}
          <button type="submit" disabled={pending}>
            Send
          </button>
        </form>
      </section>
    </div>
  );
}
