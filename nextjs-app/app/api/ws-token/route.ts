// The auth handoff: a 60-second connection token for the signed-in user, signed with the
// secret the gateway verifies (WS_SECRET, HS256). The centrifuge SDK calls this through its
// getToken option, at connect and again before the token expires.
import { signGatewayToken } from "@/lib/tokens";
import { currentUser } from "@/lib/session";

export const dynamic = "force-dynamic";

export async function GET() {
  const user = await currentUser();
  if (!user) return Response.json({ error: "not signed in" }, { status: 401 });
  const token = await signGatewayToken(user.id, { info: { name: user.name } });
  return Response.json({ token }, { headers: { "Cache-Control": "no-store" } });
}
