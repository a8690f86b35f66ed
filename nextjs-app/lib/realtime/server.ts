// Server-side helpers for route handlers and Server Actions: the gateway's server API, on
// loopback, with GATEWAY_API_KEY. The gateway sets GATEWAY_INTERNAL_URL and the key for its
// Next.js child. `server-only` makes importing this from a client component a build error
// (it reads server secrets).
import "server-only";

export class GatewayError extends Error {
  constructor(
    message: string,
    readonly code: number,
    /** True when retrying may succeed (e.g. Redis reconnecting). */
    readonly temporary = false,
  ) {
    super(message);
  }
}

export type StreamPosition = { offset?: number; epoch?: string };
export type ClientInfo = { user: string; client: string; conn_info?: unknown; chan_info?: unknown };
export type HistoryPublication<T> = { data: T; offset?: number; time?: number; info?: ClientInfo };

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
    error?: { code: number; message: string; temporary?: boolean } | string;
  };
  if (!res.ok || body.error) {
    const error = body.error;
    if (typeof error === "object" && error) {
      throw new GatewayError(error.message, error.code, error.temporary ?? false);
    }
    throw new GatewayError(`gateway API ${method} failed with HTTP ${res.status}`, res.status);
  }
  return body.result as T;
}

/** Publish `data` to every subscriber of `channel`; returns its position in history.
 * With `idempotencyKey`, a repeat within 5 minutes is not published again. */
export function publish<T>(
  channel: string,
  data: T,
  options: { idempotencyKey?: string; tags?: Record<string, string> } = {},
): Promise<StreamPosition> {
  return call("publish", {
    channel,
    data,
    idempotency_key: options.idempotencyKey,
    tags: options.tags,
  });
}

/** Publish the same data to several channels. */
export function broadcast<T>(channels: string[], data: T) {
  return call<{ responses: { result?: StreamPosition; error?: { code: number; message: string } }[] }>(
    "broadcast",
    { channels, data },
  );
}

/** The last `limit` publications of `channel` (newest last). */
export async function history<T>(channel: string, limit = 50) {
  const result = await call<{ publications: HistoryPublication<T>[] } & StreamPosition>(
    "history",
    { channel, limit, reverse: true },
  );
  return { ...result, publications: result.publications.reverse() };
}

/** Who is subscribed to `channel`, by client id. */
export async function presence(channel: string): Promise<Record<string, ClientInfo>> {
  return (await call<{ presence: Record<string, ClientInfo> }>("presence", { channel })).presence;
}

export function presenceStats(channel: string) {
  return call<{ num_clients: number; num_users: number }>("presence_stats", { channel });
}

/** Unsubscribe a user (all their connections, or one client) from a channel. */
export function unsubscribe(channel: string, user: string, client?: string) {
  return call("unsubscribe", { channel, user, client });
}

/** Disconnect a user; by default they are told not to reconnect (3503). */
export function disconnect(user: string, code = 3503, reason = "force disconnect") {
  return call("disconnect", { user, disconnect: { code, reason } });
}

/** What `purgeCache` drops from the gateway's micro-cache: exact paths (every query and RSC
 * variant of each), every path under a prefix, or everything. */
export type CachePurge = string[] | { paths: string[] } | { prefix: string } | { all: true };

/** Drop pages from the gateway's micro-cache (`proxy.micro_cache`) in every gateway process
 * sharing its engine. `purged` counts this process's entries; `processes` how many processes
 * the purge reached. With the cache off (the gateway says so in GATEWAY_MICRO_CACHE=0) it
 * purges nothing and makes no request. */
export async function purgeCache(what: CachePurge) {
  if (process.env.GATEWAY_MICRO_CACHE === "0") return { purged: 0, processes: 0 };
  const params = Array.isArray(what) ? { paths: what } : what;
  return call<{ purged: number; processes: number }>("cache_purge", params);
}
