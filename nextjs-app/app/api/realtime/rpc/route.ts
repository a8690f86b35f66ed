// The rpc hook (realtime.hooks.rpc in config/gateway.yaml): browsers call
// `rpc("dice", {})` over their WebSocket; the gateway asks this route and relays the answer.
import { allow, deny, gatewayHook, type RpcRequest } from "@/lib/realtime/route-hooks";

export const dynamic = "force-dynamic";

export const POST = gatewayHook<RpcRequest>((req) => {
  switch (req.method) {
    case "dice":
      return allow({ data: { value: 1 + Math.floor(Math.random() * 6) } });
    case "whoami":
      return allow({ data: { user: req.user, info: req.info ?? null } });
    default:
      return deny(104, "method not found");
  }
});
