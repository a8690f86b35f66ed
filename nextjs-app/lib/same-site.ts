// Where to send a user after sign-in, from a value an attacker can choose (`?next=` in a link
// they hand out). Only a path on this site passes; anything else is the fallback. Browsers
// read `//host`, `/\host` and `\\host` as another site (WHATWG URL: a backslash is a slash in
// http(s) URLs, and tabs and newlines are removed before parsing), so those are refused, as
// is a scheme (`https:`, `javascript:`). The percent-decoded value passes the same checks, so
// nothing that decodes it once later (a proxy, a router) can turn `/%2F%2Fevil` into `//evil`.

export const AFTER_SIGN_IN = "/live";

const ORIGIN = "http://same-site.invalid";

function isLocalPath(value: string): boolean {
  if (!value.startsWith("/") || value.startsWith("//")) return false;
  // Backslashes anywhere, and C0 controls / DEL (a browser drops tab and newline, so
  // "/\t/evil" is "//evil" to it).
  if (/[\\\u0000-\u001f\u007f]/.test(value)) return false;
  return new URL(value, ORIGIN).origin === ORIGIN;
}

/** `value` when it is a path on this site (`/chat?room=x#y`), else `fallback`. */
export function sameSitePath(value: unknown, fallback: string = AFTER_SIGN_IN): string {
  if (typeof value !== "string" || !isLocalPath(value)) return fallback;
  let decoded: string;
  try {
    decoded = decodeURIComponent(value);
  } catch {
    return fallback; // malformed escapes: not a path we produced
  }
  return isLocalPath(decoded) ? value : fallback;
}
