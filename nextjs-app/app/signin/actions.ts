"use server";

import { redirect } from "next/navigation";
import { signIn, signOut } from "@/lib/session";

export async function signInAction(formData: FormData) {
  const name = String(formData.get("name") ?? "").trim();
  if (!name) return;
  await signIn(name);
  const next = String(formData.get("next") ?? "/live");
  redirect(next.startsWith("/") ? next : "/live");
}

export async function signOutAction() {
  await signOut();
  redirect("/signin");
}
