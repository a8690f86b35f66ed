// Consumes an upload as a stream (never whole in memory) and reports its size and digest.
import { createHash } from "node:crypto";

export const dynamic = "force-dynamic";

export async function POST(request: Request) {
  const hash = createHash("sha256");
  let length = 0;
  if (request.body) {
    const reader = request.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      hash.update(value);
      length += value.byteLength;
    }
  }
  return Response.json({ length, sha256: hash.digest("hex") });
}
