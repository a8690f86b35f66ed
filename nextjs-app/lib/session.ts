// A signed-cookie session: just enough identity for the demo. The cookie holds the user's id
// and name, signed with HMAC-SHA256 under a key derived from WS_SECRET (which the gateway
// hands to this process), so it cannot be forged from the browser.
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { cookies } from "next/headers";

export type User = { id: string; name: string };

export const COOKIE = "gw_session";

function key(): Buffer {
  const secret = process.env.SESSION_SECRET || process.env.WS_SECRET;
  if (!secret) throw new Error("WS_SECRET is not set (the gateway sets it for its Next.js child)");
  return createHash("sha256").update("session:" + secret).digest();
}

function sign(payload: string): string {
  return createHmac("sha256", key()).update(payload).digest("base64url");
}

export function encodeSession(user: User): string {
  const payload = Buffer.from(JSON.stringify(user)).toString("base64url");
  return `${payload}.${sign(payload)}`;
}

export function decodeSession(value: string | undefined): User | null {
  if (!value) return null;
  const [payload, mac] = value.split(".");
  if (!payload || !mac) return null;
  const expected = Buffer.from(sign(payload));
  const given = Buffer.from(mac);
  if (expected.length !== given.length || !timingSafeEqual(expected, given)) return null;
  try {
    const user = JSON.parse(Buffer.from(payload, "base64url").toString()) as User;
    return typeof user.id === "string" && typeof user.name === "string" ? user : null;
  } catch {
    return null;
  }
}

export async function currentUser(): Promise<User | null> {
  return decodeSession((await cookies()).get(COOKIE)?.value);
}

export async function signIn(name: string): Promise<User> {
  const user = { id: randomBytes(6).toString("base64url"), name: name.trim().slice(0, 40) };
  (await cookies()).set(COOKIE, encodeSession(user), {
    httpOnly: true,
    sameSite: "lax",
    path: "/",
    maxAge: 60 * 60 * 24 * 30,
  });
  return user;
}

export async function signOut(): Promise<void> {
  (await cookies()).delete(COOKIE);
}
