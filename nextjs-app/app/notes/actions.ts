"use server";

import { revalidatePath } from "next/cache";
import { appendNote } from "@/lib/notes";

// A Server Action: Next.js accepts it only if the request's Origin matches the host it was
// sent to (X-Forwarded-Host, else Host), which the gateway sets from what the browser used.
export async function addNote(formData: FormData) {
  const text = String(formData.get("text") ?? "").trim();
  if (text) appendNote(text);
  revalidatePath("/notes");
}
