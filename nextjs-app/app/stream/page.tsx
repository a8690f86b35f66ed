import { Suspense } from "react";
import { sleep } from "@/lib/sleep";

// Streaming SSR: the shell is sent at once, the slow part when it resolves. Through the gateway
// the shell must arrive just as early as from `next start` directly.
export const dynamic = "force-dynamic";

async function Slow({ ms }: { ms: number }) {
  await sleep(ms);
  return <p id="slow">Loaded after {ms} ms.</p>;
}

export default async function StreamingPage({
  searchParams,
}: {
  searchParams: Promise<{ ms?: string }>;
}) {
  const { ms = "800" } = await searchParams;
  return (
    <>
      <h1>Streaming</h1>
      <p id="shell">This paragraph is in the first chunk.</p>
      <Suspense fallback={<p id="fallback">Loading…</p>}>
        <Slow ms={Math.min(Number(ms) || 0, 10_000)} />
      </Suspense>
    </>
  );
}
