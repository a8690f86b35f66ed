# The gateway and the bundled Next.js app in one image, run by supervisord (docs/deployment.md).
#
#   docker build -t nextjs-ws-gateway .
#   docker run -p 8000:8000 -e WS_SECRET=... -e GATEWAY_API_KEY=... nextjs-ws-gateway
#
# The build steps live in docker/build.sh. tests/integration/test_docker_recipe.py runs this
# file's stages outside Docker on every CI run (this machine has no Docker engine): it follows
# the WORKDIR, ENV, COPY and `RUN sh docker/build.sh` lines, then the CMD and the HEALTHCHECK.
# Other RUN lines only make sense in an image (apt-get, useradd) and are listed in that test.

# -- Node stage: install and build nextjs-app ---------------------------------------------------
FROM node:20-bookworm-slim AS app
ENV NEXT_TELEMETRY_DISABLED=1
WORKDIR /src
COPY docker/build.sh docker/build.sh
COPY nextjs-app/package.json nextjs-app/package-lock.json nextjs-app/
RUN sh docker/build.sh app-deps
COPY nextjs-app/ nextjs-app/
RUN sh docker/build.sh app

# -- Runtime: Python, the gateway, supervisord, node (the binary only), the standalone app ---
FROM python:3.11-slim-bookworm
ENV NEXT_TELEMETRY_DISABLED=1 \
    PYTHONUNBUFFERED=1 \
    GATEWAY_VENV=/opt/gateway \
    PATH=/opt/gateway/bin:$PATH \
    GATEWAY_PORT=8000 \
    GATEWAY_CONFIG=/app/config/gateway.yaml \
    GATEWAY_NEXT_DIR=/app/nextjs-app/.next/standalone \
    GATEWAY_RUN_DIR=/tmp/gateway \
    GATEWAY_LOCAL_REDIS=false
# redis-server for GATEWAY_LOCAL_REDIS=true (engine.kind redis on one box); a few MB.
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/*
COPY --from=app /usr/local/bin/node /usr/local/bin/node
WORKDIR /app
COPY docker/build.sh docker/build.sh
COPY setup.py pyproject.toml ./
COPY gateway/ gateway/
RUN sh docker/build.sh gateway
COPY config/ config/
COPY supervisord.conf ./
# The standalone build (server.js and the node_modules it uses: 42 MB, against 363 MB for the
# pruned project) and, where `next build` put them, the files the gateway serves itself.
COPY --from=app /src/nextjs-app/.next/standalone/ nextjs-app/.next/standalone/
COPY --from=app /src/nextjs-app/.next/static/ nextjs-app/.next/static/
COPY --from=app /src/nextjs-app/public/ nextjs-app/public/
RUN sh docker/build.sh check
# An unprivileged user; it owns only the run directory (sockets, pid file).
RUN useradd --system --uid 10001 --no-create-home --home-dir /app gateway \
    && mkdir -p "$GATEWAY_RUN_DIR" && chown gateway "$GATEWAY_RUN_DIR"
USER gateway
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/_gateway/ready' % os.environ['GATEWAY_PORT'], timeout=2)"
# `docker stop` sends SIGTERM to supervisord, which stops the gateway gracefully (stopwaitsecs
# 40 s in supervisord.conf): run with `docker stop -t 45` or `stop_grace_period: 45s`.
STOPSIGNAL SIGTERM
CMD ["supervisord", "-n", "-c", "/app/supervisord.conf"]
