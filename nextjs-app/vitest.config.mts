// The realtime glue's tests (tests/realtime): React in jsdom against a running gateway.
// tests/integration/test_realtime_glue_ts.py starts one and runs `vitest run` with its address
// in GATEWAY_URL; run alone, the tests refuse to start without it.
import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));

export default defineConfig({
  resolve: {
    alias: {
      "@/": here("./"),
      // The real package throws outside a react-server bundle; the tests drive server.ts from
      // Node on purpose (it publishes and disconnects through the gateway's server API).
      "server-only": here("./tests/realtime/server-only.ts"),
    },
  },
  test: {
    include: ["tests/**/*.test.{ts,tsx}"],
    environment: "jsdom",
    // The page's origin is the gateway's: the SDK's default URL and the Origin check follow.
    environmentOptions: { jsdom: { url: process.env.GATEWAY_URL ?? "http://127.0.0.1:1/" } },
    setupFiles: ["tests/realtime/setup.ts"],
    fileParallelism: false,
    testTimeout: 30_000,
  },
});
