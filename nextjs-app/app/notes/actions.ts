"use server";

import { revalidatePathEverywhere } from "@/lib/gateway-cache";
import { appendNote } from "@/lib/notes";

// A Server Action: Next.js accepts it only if the request's Origin matches the host it was
// sent to (X-Forwarded-Host, else Host), which the gateway sets from what the browser used.
// revalidatePathEverywhere: Next's revalidatePath, then the gateway's micro-cache purge (a
// no-op with proxy.micro_cache off).
export async function addNote(formData: FormData) {
  const text = String(formData.get("text") ?? "").trim();
  if (text) appendNote(text);
  await revalidatePathEverywhere("/notes");
}
