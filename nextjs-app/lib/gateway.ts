// Server-side helper for route handlers and Server Actions: the gateway's server API, on
// loopback, with GATEWAY_API_KEY. The gateway sets GATEWAY_INTERNAL_URL and the key for its
// Next.js child. Never import this from client components.
export class GatewayError extends Error {
  constructor(
    message: string,
    readonly code: number,
  ) {
    super(message);
  }
}

export type StreamPosition = { offset?: number; epoch?: string };

async function call<T>(method: string, params: Record<string, unknown>): Promise<T> {
  const base = process.env.GATEWAY_INTERNAL_URL ?? "http://127.0.0.1:8000";
  const res = await fetch(`${base}/_gateway/api/${method}`, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      "X-API-Key": process.env.GATEWAY_API_KEY ?? "",
    },
    body: JSON.stringify(params),
    cache: "no-store",
  });
  const body = (await res.json().catch(() => ({}))) as {
    result?: T;
    error?: { code: number; message: string } | string;
  };
  if (!res.ok || body.error) {
    const error = body.error;
    if (typeof error === "object" && error) throw new GatewayError(error.message, error.code);
    throw new GatewayError(`gateway API ${method} failed with HTTP ${res.status}`, res.status);
  }
  return body.result as T;
}

/** Publish `data` to every subscriber of `channel`; returns its position in history. */
export function publish(
  channel: string,
  data: unknown,
  options: { idempotencyKey?: string } = {},
): Promise<StreamPosition> {
  return call("publish", { channel, data, idempotency_key: options.idempotencyKey });
}
