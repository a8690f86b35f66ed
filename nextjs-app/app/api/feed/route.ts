// Publishes to the demo feed through the gateway's server API (route handler variant of the
// Server Action on /live).
import { publish } from "@/lib/realtime/server";
import { currentUser } from "@/lib/session";

export const dynamic = "force-dynamic";

export async function POST(request: Request) {
  const user = await currentUser();
  if (!user) return Response.json({ error: "not signed in" }, { status: 401 });
  const { text } = (await request.json().catch(() => ({}))) as { text?: unknown };
  if (typeof text !== "string" || !text.trim()) {
    return Response.json({ error: "text is required" }, { status: 400 });
  }
  const position = await publish("feed:demo", { text: text.slice(0, 500), from: user.name });
  return Response.json(position);
}
