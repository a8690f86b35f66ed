"use server";

import { randomUUID } from "node:crypto";
import { publish } from "@/lib/realtime/server";
import { currentUser } from "@/lib/session";
import type { ChatMessage } from "@/components/chat/types";

// A chat message goes from the browser to this Server Action, then through the gateway's
// server API to every member's WebSocket (and into the room's history).
export async function sendMessage(room: string, text: string): Promise<{ ok: boolean; error?: string }> {
  const user = await currentUser();
  if (!user) return { ok: false, error: "not signed in" };
  const body = text.trim().slice(0, 1000);
  if (!body || !/^[a-z0-9-]{1,32}$/.test(room)) return { ok: false, error: "nothing to send" };
  const message: ChatMessage = {
    id: randomUUID(),
    text: body,
    from: { id: user.id, name: user.name },
    at: Date.now(),
  };
  await publish(`chat:${room}`, message, { idempotencyKey: message.id });
  return { ok: true };
}
