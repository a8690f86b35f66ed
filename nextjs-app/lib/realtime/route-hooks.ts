// Writing the route handlers the gateway calls (realtime "proxy hooks", docs/hooks.md). Server
// only; the React hooks are in use-realtime.ts.
//
//   export const POST = gatewayHook<RpcRequest>(async (req) =>
//     req.method === "roll" ? allow({ data: { value: 4 } }) : deny(104, "method not found"));
//
// The gateway calls them over loopback with X-Gateway-Key (its API key); anything else gets
// 403, so browsers cannot call a hook pretending to be the gateway.
import "server-only";
import { timingSafeEqual } from "node:crypto";

export type ConnectRequest = {
  client: string;
  transport: string;
  protocol: string;
  /** The user of the connection token, or "" without one. */
  user: string;
  authenticated: boolean;
  data?: unknown;
  name?: string;
  version?: string;
  /** Headers of the WebSocket upgrade request: cookie, user-agent, origin, accept-language. */
  headers: Record<string, string>;
};
export type SubscribeRequest = { client: string; user: string; channel: string; data?: unknown; info?: unknown };
export type PublishRequest = { client: string; user: string; channel: string; data: unknown; info?: unknown };
export type RpcRequest = { client: string; user: string; method: string; data?: unknown; info?: unknown };
/** A client `send` (no reply reaches the client). */
export type SendRequest = { client: string; user: string; data?: unknown; info?: unknown };

export type HookAnswer =
  | { result: Record<string, unknown> }
  | { error: { code: number; message: string; temporary?: boolean } }
  | { disconnect: { code: number; reason: string } };

/** Let it through; `result` may carry what the event allows (see docs/hooks.md). */
export const allow = (result: Record<string, unknown> = {}): HookAnswer => ({ result });
/** Refuse this command: the client gets the error (codes >= 400 are yours to define). */
export const deny = (code: number, message: string, temporary = false): HookAnswer => ({
  error: { code, message, temporary },
});
/** Close the connection (3000-3499 and 4000-4499: the SDK reconnects; others: it does not). */
export const disconnect = (code: number, reason: string): HookAnswer => ({
  disconnect: { code, reason },
});

function fromGateway(request: Request): boolean {
  const expected = Buffer.from(process.env.GATEWAY_API_KEY ?? "");
  const given = Buffer.from(request.headers.get("x-gateway-key") ?? "");
  return expected.length > 0 && expected.length === given.length && timingSafeEqual(expected, given);
}

export function gatewayHook<Req>(handler: (req: Req) => Promise<HookAnswer> | HookAnswer) {
  return async (request: Request): Promise<Response> => {
    if (!fromGateway(request)) return Response.json({ error: "forbidden" }, { status: 403 });
    const body = (await request.json()) as Req;
    return Response.json(await handler(body));
  };
}

/** A cookie's value from the headers a connect hook receives. */
export function cookieFrom(headers: Record<string, string>, name: string): string | undefined {
  for (const part of (headers.cookie ?? "").split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return decodeURIComponent(rest.join("="));
  }
  return undefined;
}
