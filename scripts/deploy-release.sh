#!/usr/bin/env bash
# Deploy a new version of the Next.js app without downtime (docs/deployment.md, "Deploying").
#
#   scripts/deploy-release.sh SOURCE RELEASES [--port N]
#
# SOURCE    the app's sources (a checkout; its node_modules and .next are not copied)
# RELEASES  the directory that holds releases/<id> and the `current` link next.dir points at
#
# 1. builds SOURCE into RELEASES/releases/<id> (npm ci, next build): the running release is
#    never touched;
# 2. switches RELEASES/current to it atomically (a new link renamed over the old one);
# 3. `gateway reload`: the gateway starts the new release beside the old one and switches to
#    it once it answers; if it does not, the old one keeps serving, this script puts the link
#    back and exits 1.
# Override the steps with NPM_CI="..." and BUILD="..." (run in the new release directory).
set -euo pipefail

if [ $# -lt 2 ]; then
  sed -n '4,8p' "$0"; exit 2
fi
source=$(cd "$1" && pwd)
root=$2
shift 2
port_args=("$@")
gateway=${GATEWAY:-gateway}

id=$(date -u +%Y%m%d%H%M%S)-$$
release="$root/releases/$id"
mkdir -p "$root/releases"
echo "building $release"
mkdir "$release"
(cd "$source" && tar --exclude=./node_modules --exclude=./.next -cf - .) | (cd "$release" && tar -xf -)
(cd "$release" && eval "${NPM_CI:-npm ci --no-audit --no-fund}")
(cd "$release" && eval "${BUILD:-NEXT_TELEMETRY_DISABLED=1 node node_modules/next/dist/bin/next build}")

previous=$(readlink "$root/current" 2>/dev/null || true)
ln -sfn "$release" "$root/current.new"
mv -T "$root/current.new" "$root/current"
echo "current -> $release; reloading"
if "$gateway" reload "${port_args[@]}"; then
  exit 0
fi
if [ -n "$previous" ]; then
  ln -sfn "$previous" "$root/current.new"
  mv -T "$root/current.new" "$root/current"
  echo "refused: current -> $previous again (the gateway kept serving it)" >&2
fi
exit 1
