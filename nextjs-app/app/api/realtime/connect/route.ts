// Example connect hook (enable with realtime.hooks.connect: /api/realtime/connect): the browser
// connects without a token, and this route identifies it from the session cookie that came
// with the WebSocket upgrade.
import { allow, cookieFrom, deny, gatewayHook, type ConnectRequest } from "@/lib/realtime/route-hooks";
import { COOKIE, decodeSession } from "@/lib/session";

export const dynamic = "force-dynamic";

export const POST = gatewayHook<ConnectRequest>((req) => {
  if (req.authenticated) return allow(); // a valid token already says who it is
  const user = decodeSession(cookieFrom(req.headers, COOKIE));
  if (!user) return deny(101, "unauthorized");
  return allow({ user: user.id, info: { name: user.name } });
});
