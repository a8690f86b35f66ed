import type { NextConfig } from "next";

const nextConfig: NextConfig = {
  // The gateway sits in front of `next start` and owns compression decisions for static
  // assets; Next still compresses its own dynamic responses, which the gateway passes through.
  poweredByHeader: false,
  // The container image ships a standalone build (docker/build.sh sets BUILD_STANDALONE=1):
  // server.js and only the node_modules it needs, 42 MB instead of 363 MB (docs/compatibility.md).
  // `make build` and the tests keep the project layout, served by `next start`.
  output: process.env.BUILD_STANDALONE === "1" ? "standalone" : undefined,
  reactStrictMode: true,
};

export default nextConfig;
