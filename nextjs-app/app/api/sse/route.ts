// Server-Sent Events: `count` events `interval` ms apart, each stamped with the time Next
// emitted it (ms since the epoch, sub-ms precision), then an optional `silence` before the end.
// GET /api/sse?stats=1 reports how many streams are open and how many clients went away.
import { sleep } from "@/lib/sleep";

export const dynamic = "force-dynamic";

const state = ((globalThis as Record<string, unknown>).__sse ??= { open: 0, cancelled: 0 }) as {
  open: number;
  cancelled: number;
};

export async function GET(request: Request) {
  const url = new URL(request.url);
  if (url.searchParams.has("stats")) return Response.json(state);
  const count = Number(url.searchParams.get("count") ?? 5);
  const interval = Number(url.searchParams.get("interval") ?? 200);
  const silence = Number(url.searchParams.get("silence") ?? 0);
  const encoder = new TextEncoder();
  let closed = false;
  const stream = new ReadableStream<Uint8Array>({
    async start(controller) {
      state.open += 1;
      try {
        for (let i = 0; i < count && !closed; i++) {
          const t = performance.timeOrigin + performance.now();
          controller.enqueue(encoder.encode(`id: ${i}\ndata: ${JSON.stringify({ i, t })}\n\n`));
          if (i < count - 1) await sleep(interval);
        }
        if (silence > 0 && !closed) await sleep(silence);
        if (!closed) controller.close();
      } finally {
        state.open -= 1;
      }
    },
    cancel() {
      closed = true;
      state.cancelled += 1;
    },
  });
  return new Response(stream, {
    headers: {
      "Content-Type": "text/event-stream; charset=utf-8",
      // no-transform keeps Next's compression from buffering the stream.
      "Cache-Control": "no-cache, no-transform",
    },
  });
}
