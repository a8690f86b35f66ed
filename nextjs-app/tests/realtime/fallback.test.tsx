// The provider's default transports driven through the real SDK, no gateway needed: the
// WebSocket is refused (as a proxy that breaks upgrades would), the SDK falls back to
// HTTP-streaming, here a fake `fetch` playing the gateway's part of the wire, and the hooks say
// which transport carries the connection. What is checked is the glue: the endpoints the SDK
// is given (from the page's location) and the state it reports.
import { render } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import { ConnectionBadge } from "@/components/ConnectionBadge";
import { RealtimeProvider, useConnectionState, useRealtime } from "@/lib/realtime";

type Command = { id?: number; connect?: { token?: string }; rpc?: { method: string } };

/** A WebSocket whose upgrade never succeeds: it closes before opening, as a blocked one does. */
class BlockedWebSocket {
  static tried: string[] = [];
  onopen: (() => void) | null = null;
  onerror: ((e: unknown) => void) | null = null;
  onclose: ((e: { code: number; reason: string }) => void) | null = null;
  onmessage: ((e: unknown) => void) | null = null;
  constructor(url: string) {
    BlockedWebSocket.tried.push(url);
    setTimeout(() => {
      this.onerror?.(new Error("upgrade refused"));
      this.onclose?.({ code: 1006, reason: "" });
    });
  }
  send(): void {}
  close(): void {}
}

/** The gateway's side of http_stream and the emulation endpoint, as far as these tests go:
 * answer connect on the stream, answer an rpc posted to the emulation endpoint on it too. */
class FakeEmulation {
  readonly posts: { url: string; body: string }[] = [];
  private stream: ReadableStreamDefaultController<Uint8Array> | null = null;
  private streams = 0;

  constructor(private readonly emulationPath = "/connection/emulation") {}

  readonly fetch = async (url: string, init: RequestInit) => {
    const body = String(init.body);
    this.posts.push({ url, body });
    if (new URL(url).pathname === "/connection/http_stream") return this.open(body, init.signal);
    if (new URL(url).pathname === this.emulationPath) {
      const { session, data } = JSON.parse(body) as { session: string; data: string };
      expect(session).toBe(`session-${this.streams}`);
      for (const line of data.split("\n")) {
        const command = JSON.parse(line) as Command;
        if (command.rpc) this.push({ id: command.id, rpc: { data: { echo: command.rpc.method } } });
      }
      return { ok: true, status: 200 };
    }
    return { ok: false, status: 404 };
  };

  /** The server ends the current stream (a restart, a proxy timeout). */
  drop(): void {
    this.stream?.close();
    this.stream = null;
  }

  private open(body: string, signal: AbortSignal | null | undefined) {
    const connect = JSON.parse(body.split("\n")[0]) as Command;
    expect(connect.connect?.token).toBe("fake-token");
    this.streams += 1;
    const reply = {
      id: connect.id,
      connect: { client: `client-${this.streams}`, version: "0", session: `session-${this.streams}` },
    };
    const stream = new ReadableStream<Uint8Array>({
      start: (controller) => {
        this.stream = controller;
        this.push(reply);
      },
    });
    signal?.addEventListener("abort", () => {
      try {
        this.stream?.error(new Error("aborted"));
      } catch {
        // already closed
      }
    });
    return { ok: true, status: 200, body: stream };
  }

  private push(reply: object): void {
    this.stream?.enqueue(new TextEncoder().encode(`${JSON.stringify(reply)}\n`));
  }
}

type Rpc = ReturnType<typeof useRealtime>["rpc"];

function Probe({ into }: { into: { seen: string[]; rpc?: Rpc } }) {
  const { state, reconnecting, transport } = useConnectionState();
  into.rpc = useRealtime().rpc;
  const now = `${reconnecting ? "reconnecting" : state} ${transport}`;
  if (into.seen.at(-1) !== now) into.seen.push(now);
  return null;
}

const until = (check: () => void) => vi.waitFor(check, { timeout: 5_000, interval: 10 });

describe("RealtimeProvider's transports", () => {
  it("falls back from a refused WebSocket to http_stream on the page's origin, and says so", async () => {
    const server = new FakeEmulation();
    const into: { seen: string[]; rpc?: Rpc } = { seen: [] };
    BlockedWebSocket.tried = [];
    render(
      <RealtimeProvider
        getToken={async () => "fake-token"}
        options={{
          websocket: BlockedWebSocket,
          fetch: server.fetch,
          // Long enough for the badge to be seen saying "reconnecting" below.
          minReconnectDelay: 200,
          maxReconnectDelay: 300,
        }}
      >
        <Probe into={into} />
        <ConnectionBadge />
      </RealtimeProvider>,
    );
    await until(() => expect(into.seen.at(-1)).toBe("connected http_stream"));
    const badge = document.getElementById("connection-badge")!;
    expect(badge.dataset).toMatchObject({ state: "connected", transport: "http_stream" });
    expect(badge.textContent).toBe("connected via http_stream");
    const { protocol, host } = window.location;
    const http = `${protocol}//${host}`;
    const ws = `${protocol === "https:" ? "wss" : "ws"}://${host}`;
    expect(BlockedWebSocket.tried).toEqual([`${ws}/connection/websocket`]);
    expect(server.posts.map((p) => p.url)).toEqual([`${http}/connection/http_stream`]);
    expect(into.seen).toEqual(["disconnected null", "connecting null", "connected http_stream"]);

    // Client→server commands go to the emulation endpoint, replies come on the stream.
    await expect(into.rpc!("ping-me", {})).resolves.toEqual({ echo: "ping-me" });
    expect(server.posts.at(-1)?.url).toBe(`${http}/connection/emulation`);

    // No transport while reconnecting; the SDK keeps to the one that worked.
    server.drop();
    await until(() => expect(into.seen).toContain("reconnecting null"));
    await until(() => expect(badge.textContent).toBe("reconnecting"));
    expect(badge.dataset.transport).toBeUndefined();
    await until(() => expect(into.seen.at(-1)).toBe("connected http_stream"));
    expect(BlockedWebSocket.tried).toHaveLength(1);
    expect(server.posts.filter((p) => p.url.endsWith("/http_stream"))).toHaveLength(2);
  });

  it("tries only the transports given and posts to the emulation endpoint given", async () => {
    const server = new FakeEmulation("/rt/commands");
    const into: { seen: string[]; rpc?: Rpc } = { seen: [] };
    BlockedWebSocket.tried = [];
    render(
      <RealtimeProvider
        getToken={async () => "fake-token"}
        transports={["http_stream", "sse"]}
        emulationEndpoint="/rt/commands"
        options={{ websocket: BlockedWebSocket, fetch: server.fetch }}
      >
        <Probe into={into} />
      </RealtimeProvider>,
    );
    await until(() => expect(into.seen.at(-1)).toBe("connected http_stream"));
    await expect(into.rpc!("where", {})).resolves.toEqual({ echo: "where" });
    expect(BlockedWebSocket.tried).toEqual([]);
    expect(server.posts.map((p) => new URL(p.url).pathname)).toEqual([
      "/connection/http_stream",
      "/rt/commands",
    ]);
  });
});
