import type { NextConfig } from "next";

const nextConfig: NextConfig = {
  // The gateway sits in front of `next start` and owns compression decisions for static
  // assets; Next still compresses its own dynamic responses, which the gateway passes through.
  poweredByHeader: false,
  reactStrictMode: true,
};

export default nextConfig;
