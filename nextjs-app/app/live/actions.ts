"use server";

import { publish } from "@/lib/realtime/server";
import { currentUser } from "@/lib/session";

// A Server Action publishing through the gateway's server API: every browser subscribed to
// feed:demo gets it over its WebSocket.
export async function postToFeed(formData: FormData) {
  const user = await currentUser();
  const text = String(formData.get("text") ?? "").trim();
  if (!user || !text) return;
  await publish("feed:demo", { text: text.slice(0, 500), from: user.name });
}
