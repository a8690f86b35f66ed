# First draft: a Node stage builds the Next.js app, a Python stage runs the gateway, which
# supervises `next start` itself. Production hardening comes with the packaging work.

FROM node:20-bookworm-slim AS next-build
ENV NEXT_TELEMETRY_DISABLED=1
WORKDIR /app/nextjs-app
COPY nextjs-app/package.json nextjs-app/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY nextjs-app/ ./
RUN node node_modules/next/dist/bin/next build && npm prune --omit=dev --no-audit --no-fund

FROM python:3.11-slim-bookworm
ENV NEXT_TELEMETRY_DISABLED=1 PYTHONUNBUFFERED=1
# Next.js needs only the node binary at run time.
COPY --from=next-build /usr/local/bin/node /usr/local/bin/node
WORKDIR /app
COPY setup.py ./
COPY gateway/ gateway/
RUN pip install --no-cache-dir . supervisor
COPY config/ config/
COPY supervisord.conf ./
COPY --from=next-build /app/nextjs-app /app/nextjs-app
RUN useradd --system --uid 10001 --home /app gateway && chown -R gateway /app/nextjs-app/.next
USER gateway
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/_gateway/ready', timeout=2)"
CMD ["supervisord", "-n", "-c", "/app/supervisord.conf"]
