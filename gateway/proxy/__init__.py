"""The HTTP side: the proxy to Next.js, its keep-alive pool, static assets, passthrough."""
