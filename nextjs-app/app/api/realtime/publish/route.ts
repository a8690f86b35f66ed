// Example publish hook (enable with publish_hook: /api/realtime/publish on a namespace): the
// app checks what a browser publishes and may replace it (here: trimmed, size-capped text).
import { allow, deny, gatewayHook, type PublishRequest } from "@/lib/realtime/route-hooks";

export const dynamic = "force-dynamic";

export const POST = gatewayHook<PublishRequest>((req) => {
  const data = req.data as { text?: unknown };
  if (typeof data?.text !== "string" || !data.text.trim()) return deny(400, "text is required");
  return allow({ data: { text: data.text.trim().slice(0, 280), checkedAt: Date.now() } });
});
