import type { NextConfig } from "next";

const nextConfig: NextConfig = {
  // The gateway sits in front of `next start` and owns compression: it asks Next for identity
  // bodies (Accept-Encoding: identity) and compresses to the browser itself, caching what it
  // can (docs/proxy.md). `compress` stays on so that `next start` alone still compresses.
  poweredByHeader: false,
  // The container image ships a standalone build (docker/build.sh sets BUILD_STANDALONE=1):
  // server.js and only the node_modules it needs, 42 MB instead of 363 MB (docs/compatibility.md).
  // `make build` and the tests keep the project layout, served by `next start`.
  output: process.env.BUILD_STANDALONE === "1" ? "standalone" : undefined,
  reactStrictMode: true,
};

export default nextConfig;
