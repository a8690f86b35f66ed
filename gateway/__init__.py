"""Run a Next.js app and its WebSockets on one port: a Tornado gateway."""

__version__ = "0.1.0"
