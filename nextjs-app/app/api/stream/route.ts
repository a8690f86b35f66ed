// A ReadableStream of `chunks` text chunks, `interval` ms apart.
import { sleep } from "@/lib/sleep";

export const dynamic = "force-dynamic";

export async function GET(request: Request) {
  const url = new URL(request.url);
  const chunks = Number(url.searchParams.get("chunks") ?? 5);
  const interval = Number(url.searchParams.get("interval") ?? 200);
  const encoder = new TextEncoder();
  let i = 0;
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (i > 0) await sleep(interval);
      controller.enqueue(encoder.encode(`chunk ${i}\n`));
      i += 1;
      if (i >= chunks) controller.close();
    },
  });
  return new Response(stream, {
    headers: { "Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-transform" },
  });
}
