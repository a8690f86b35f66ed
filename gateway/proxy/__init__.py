"""The HTTP side: the proxy to Next.js, the keep-alive pool, static assets, WebSocket passthrough."""
