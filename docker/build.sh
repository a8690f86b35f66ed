#!/bin/sh
# The image's build steps, one per stage of the Dockerfile. The Dockerfile runs them, and so
# does tests/integration/test_docker_recipe.py, outside Docker, on every CI run: what the image
# is built with is what CI builds. Run from the stage's working directory:
#
#   sh docker/build.sh app-deps   Node stage: install nextjs-app's dependencies (npm ci)
#   sh docker/build.sh app        Node stage: next build, standalone output
#   sh docker/build.sh gateway    Python stage: the gateway and supervisord into $GATEWAY_VENV
#   sh docker/build.sh check      Python stage: the shipped files are usable (config, conf, app)
set -eu

step=${1:?usage: build.sh app-deps|app|gateway|check}
export NEXT_TELEMETRY_DISABLED=1

case "$step" in
app-deps)
	cd nextjs-app
	npm ci --no-audit --no-fund
	;;
app)
	cd nextjs-app
	# output: 'standalone' (next.config.ts): .next/standalone holds server.js and only the
	# node_modules it uses. The runtime stage copies it with .next/static and public/, which
	# the gateway serves from there: no copy into the standalone folder, no npm prune.
	BUILD_STANDALONE=1 node node_modules/next/dist/bin/next build
	test -f .next/standalone/server.js || { echo "next build made no standalone server" >&2; exit 1; }
	;;
gateway)
	: "${GATEWAY_VENV:?set GATEWAY_VENV to the virtualenv to create}"
	python3 -m venv "$GATEWAY_VENV"
	"$GATEWAY_VENV/bin/pip" install --no-cache-dir --quiet --disable-pip-version-check '.[deploy]'
	# A build tree left beside the sources is not part of the install.
	rm -rf build ./*.egg-info
	"$GATEWAY_VENV/bin/gateway" --help >/dev/null
	"$GATEWAY_VENV/bin/supervisord" --version >/dev/null
	;;
check)
	: "${GATEWAY_CONFIG:?set GATEWAY_CONFIG to the shipped config file}"
	"$GATEWAY_VENV/bin/gateway" check-config "$GATEWAY_CONFIG" >/dev/null
	: "${GATEWAY_NEXT_DIR:?set GATEWAY_NEXT_DIR to the shipped standalone build}"
	test -f "$GATEWAY_NEXT_DIR/.next/BUILD_ID" || { echo "nextjs-app is not built" >&2; exit 1; }
	test -f "$GATEWAY_NEXT_DIR/server.js" || { echo "no standalone server.js" >&2; exit 1; }
	test -d "$GATEWAY_NEXT_DIR/../static" || { echo "no .next/static beside it" >&2; exit 1; }
	test -f supervisord.conf || { echo "supervisord.conf is missing" >&2; exit 1; }
	echo "image contents check out: $(cat "$GATEWAY_NEXT_DIR/.next/BUILD_ID")"
	;;
*)
	echo "build.sh: unknown step '$step' (app-deps, app, gateway or check)" >&2
	exit 2
	;;
esac
