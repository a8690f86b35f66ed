// `mb` MiB of bytes, produced only as fast as the reader takes them (a pull stream): used to
// show that a slow client slows Next down instead of piling data up in the gateway.
export const dynamic = "force-dynamic";

const CHUNK = new Uint8Array(64 * 1024).fill(0x78);

export async function GET(request: Request) {
  const total = Number(new URL(request.url).searchParams.get("mb") ?? 1) * 1024 * 1024;
  let sent = 0;
  const stream = new ReadableStream<Uint8Array>(
    {
      pull(controller) {
        const n = Math.min(CHUNK.byteLength, total - sent);
        controller.enqueue(n === CHUNK.byteLength ? CHUNK : CHUNK.slice(0, n));
        sent += n;
        if (sent >= total) controller.close();
      },
    },
    { highWaterMark: 1 },
  );
  return new Response(stream, {
    headers: {
      "Content-Type": "application/octet-stream",
      "Content-Length": String(total),
      "Cache-Control": "no-transform",
    },
  });
}
