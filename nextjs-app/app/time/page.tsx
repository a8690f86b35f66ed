import { headers } from "next/headers";

// Rendered on every request: proves the proxy reaches a live server, not a cached file.
export const dynamic = "force-dynamic";

export default async function ServerTime() {
  const h = await headers();
  return (
    <>
      <h1>Server time</h1>
      <p>
        Rendered at <time id="rendered-at">{new Date().toISOString()}</time> for host{" "}
        <code id="host">{h.get("host")}</code>.
      </p>
    </>
  );
}
