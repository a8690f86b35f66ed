#!/bin/sh
# The image's build steps, one per stage of the Dockerfile. The Dockerfile runs them, and so
# does tests/integration/test_docker_recipe.py, outside Docker, on every CI run: what the image
# is built with is what CI builds. Run from the stage's working directory:
#
#   sh docker/build.sh app-deps   Node stage: install nextjs-app's dependencies (npm ci)
#   sh docker/build.sh app        Node stage: next build, then drop dev dependencies and caches
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
	node node_modules/next/dist/bin/next build
	npm prune --omit=dev --no-audit --no-fund
	# The build cache speeds up the next build only; it is not needed to serve.
	rm -rf .next/cache
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
	test -f nextjs-app/.next/BUILD_ID || { echo "nextjs-app is not built" >&2; exit 1; }
	test -f supervisord.conf || { echo "supervisord.conf is missing" >&2; exit 1; }
	echo "image contents check out: $(cat nextjs-app/.next/BUILD_ID)"
	;;
*)
	echo "build.sh: unknown step '$step' (app-deps, app, gateway or check)" >&2
	exit 2
	;;
esac
