// Echoes what the proxy delivered: method, body digest and selected headers. Tests use it to
// check that request bodies and headers pass through the gateway untouched.
import { createHash } from "node:crypto";

export const dynamic = "force-dynamic";

async function describe(request: Request) {
  const body = new Uint8Array(await request.arrayBuffer());
  const headers: Record<string, string> = {};
  request.headers.forEach((value, key) => {
    headers[key] = value;
  });
  return Response.json(
    {
      method: request.method,
      length: body.byteLength,
      sha256: createHash("sha256").update(body).digest("hex"),
      headers,
    },
    {
      headers: [
        ["set-cookie", "a=1; Path=/"],
        ["set-cookie", "b=2; Path=/; HttpOnly"],
        ["x-echo", "yes"],
      ],
    },
  );
}

export const GET = describe;
export const POST = describe;
export const PUT = describe;
export const PATCH = describe;
export const DELETE = describe;
export const OPTIONS = describe;
