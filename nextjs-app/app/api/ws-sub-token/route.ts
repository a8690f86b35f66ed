// Subscription tokens for private channels: "user:<id>" is for that user alone.
import { signGatewayToken } from "@/lib/tokens";
import { currentUser } from "@/lib/session";

export const dynamic = "force-dynamic";

export async function GET(request: Request) {
  const user = await currentUser();
  if (!user) return Response.json({ error: "not signed in" }, { status: 401 });
  const channel = new URL(request.url).searchParams.get("channel") ?? "";
  if (channel !== `user:${user.id}`) {
    return Response.json({ error: "not your channel" }, { status: 403 });
  }
  const token = await signGatewayToken(user.id, { channel });
  return Response.json({ token }, { headers: { "Cache-Control": "no-store" } });
}
