"use server";

import { redirect } from "next/navigation";
import { sameSitePath } from "@/lib/same-site";
import { signIn, signOut } from "@/lib/session";

export async function signInAction(formData: FormData) {
  const name = String(formData.get("name") ?? "").trim();
  if (!name) return;
  await signIn(name);
  redirect(sameSitePath(formData.get("next")));
}

export async function signOutAction() {
  await signOut();
  redirect("/signin");
}
