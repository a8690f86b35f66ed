// Next.js's on-demand revalidation, seen by the gateway's micro-cache too (docs/proxy.md,
// "Micro-cache"). Next's `revalidatePath` / `revalidateTag` only reach Next's own cache; a page
// the gateway holds in memory would be served as it was until its entry expires
// (`proxy.micro_cache.max_ttl`). These call Next's, then purge the gateway's copies.
// Server-only: from Server Actions and route handlers.
import "server-only";
import { revalidatePath, revalidateTag } from "next/cache";
import { type CachePurge, purgeCache } from "./realtime/server";

export { type CachePurge, purgeCache };

/** The gateway purge that covers `revalidatePath(path, type)`: the page itself (all its
 * queries and RSC variants), or, for a layout or a route pattern such as `/blog/[slug]`,
 * every path under it. */
export function purgeFor(path: string, type?: "layout" | "page"): CachePurge {
  const dynamic = path.indexOf("/[");
  if (dynamic >= 0) return { prefix: path.slice(0, dynamic + 1) };
  if (type === "layout") return { prefix: path };
  return { paths: [path] };
}

async function purgeLogged(what: CachePurge): Promise<void> {
  try {
    await purgeCache(what);
  } catch (error) {
    // The change is saved and Next's cache is revalidated: failing the action now would say
    // otherwise. The gateway's copy expires within max_ttl.
    console.error("gateway cache purge failed (pages stay cached until they expire):", error);
  }
}

/** `revalidatePath`, then the same pages out of the gateway's micro-cache. */
export async function revalidatePathEverywhere(
  path: string,
  type?: "layout" | "page",
): Promise<void> {
  revalidatePath(path, type);
  await purgeLogged(purgeFor(path, type));
}

/** `revalidateTag`; which URLs carry a tag only Next knows, so the gateway purges `purge`
 * (everything unless told which paths). */
export async function revalidateTagEverywhere(
  tag: string,
  profile: Parameters<typeof revalidateTag>[1] = "max",
  purge: CachePurge = { all: true },
): Promise<void> {
  revalidateTag(tag, profile);
  await purgeLogged(purge);
}
