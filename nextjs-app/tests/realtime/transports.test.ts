// The SDK's endpoint configuration (lib/realtime/transports.ts): pure, no gateway needed.
import { describe, expect, it } from "vitest";
import { resolveEndpoints } from "@/lib/realtime/transports";

const HTTP_PAGE = { protocol: "http:", host: "localhost:8000" };
const HTTPS_PAGE = { protocol: "https:", host: "chat.example.com" };

describe("resolveEndpoints", () => {
  it("tries websocket, http_stream then sse on an http page's origin by default", () => {
    expect(resolveEndpoints({}, HTTP_PAGE)).toEqual({
      endpoint: [
        { transport: "websocket", endpoint: "ws://localhost:8000/connection/websocket" },
        { transport: "http_stream", endpoint: "http://localhost:8000/connection/http_stream" },
        { transport: "sse", endpoint: "http://localhost:8000/connection/sse" },
      ],
      emulationEndpoint: "http://localhost:8000/connection/emulation",
    });
  });

  it("uses wss and https on an https page", () => {
    expect(resolveEndpoints({}, HTTPS_PAGE)).toEqual({
      endpoint: [
        { transport: "websocket", endpoint: "wss://chat.example.com/connection/websocket" },
        { transport: "http_stream", endpoint: "https://chat.example.com/connection/http_stream" },
        { transport: "sse", endpoint: "https://chat.example.com/connection/sse" },
      ],
      emulationEndpoint: "https://chat.example.com/connection/emulation",
    });
  });

  it("takes the transports named, in the order given", () => {
    expect(resolveEndpoints({ transports: ["sse", "websocket"] }, HTTPS_PAGE).endpoint).toEqual([
      { transport: "sse", endpoint: "https://chat.example.com/connection/sse" },
      { transport: "websocket", endpoint: "wss://chat.example.com/connection/websocket" },
    ]);
  });

  it("passes { transport, endpoint } objects through and mixes them with names", () => {
    const elsewhere = { transport: "http_stream", endpoint: "https://rt.example.net/stream" } as const;
    expect(resolveEndpoints({ transports: ["websocket", elsewhere] }, HTTP_PAGE).endpoint).toEqual([
      { transport: "websocket", endpoint: "ws://localhost:8000/connection/websocket" },
      elsewhere,
    ]);
  });

  it("resolves an emulation path on the page's origin and keeps a full URL", () => {
    expect(resolveEndpoints({ emulationEndpoint: "/rt/emulation" }, HTTPS_PAGE).emulationEndpoint)
      .toBe("https://chat.example.com/rt/emulation");
    const url = "https://rt.example.net/connection/emulation";
    expect(resolveEndpoints({ emulationEndpoint: url }, HTTP_PAGE).emulationEndpoint).toBe(url);
  });

  it("with url alone, uses that WebSocket only, as before fallback existed", () => {
    const url = "wss://rt.example.net/connection/websocket";
    expect(resolveEndpoints({ url }, HTTP_PAGE)).toEqual({ endpoint: url });
    expect(resolveEndpoints({ url, emulationEndpoint: "/ignored" }, HTTP_PAGE)).toEqual({
      endpoint: url,
    });
  });

  it("with url and transports, takes the list and url as its websocket's address", () => {
    const url = "wss://rt.example.net/connection/websocket";
    expect(resolveEndpoints({ url, transports: ["websocket", "sse"] }, HTTPS_PAGE)).toEqual({
      endpoint: [
        { transport: "websocket", endpoint: url },
        { transport: "sse", endpoint: "https://chat.example.com/connection/sse" },
      ],
      emulationEndpoint: "https://chat.example.com/connection/emulation",
    });
  });

  it("refuses an empty list and an unknown name", () => {
    expect(() => resolveEndpoints({ transports: [] }, HTTP_PAGE)).toThrow(/empty/);
    // A JavaScript caller (or a cast) can name a transport the gateway does not serve.
    const unknown = ["webtransport"] as unknown as ["websocket"];
    expect(() => resolveEndpoints({ transports: unknown }, HTTP_PAGE)).toThrow(
      /unknown transport "webtransport"/,
    );
  });
});
