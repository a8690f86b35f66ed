// Example subscribe hook (enable with subscribe_hook: /api/realtime/subscribe on a namespace):
// the app decides who may join which room, and may attach data to the subscription.
import { allow, deny, gatewayHook, type SubscribeRequest } from "@/lib/realtime/route-hooks";

export const dynamic = "force-dynamic";

export const POST = gatewayHook<SubscribeRequest>((req) => {
  const room = req.channel.split(":")[1] ?? "";
  if (room.startsWith("staff-") && !req.user.startsWith("staff")) return deny(403, "staff only");
  return allow({ data: { room, joinedAt: Date.now() } });
});
