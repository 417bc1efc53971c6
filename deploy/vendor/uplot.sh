#!/usr/bin/env bash
# The dashboard's one third-party file set: uPlot (MIT), vendored into shelfstream/api/static/vendor/uplot/
# and served by the app itself (no CDN: the Content-Security-Policy allows scripts from the app's origin only).
#
#   bash deploy/vendor/uplot.sh check    fetch uplot@VERSION from the npm registry and check that both the
#                                        published files and the vendored copies match deploy/vendor/uplot.sha256
#   bash deploy/vendor/uplot.sh update   fetch, copy into the package and record their checksums anew
#                                        (after changing VERSION below; review the diff before committing)
#
# `make vendor-check` runs the check; tests/unit/test_vendored_assets.py checks the vendored copies against
# the recorded sums without the network.
set -euo pipefail

VERSION=1.6.32
FILES=(uPlot.iife.min.js uPlot.min.css LICENSE)

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
vendored="$root/shelfstream/api/static/vendor/uplot"
sums="$here/uplot.sha256"

[[ $# -eq 1 && ( $1 == check || $1 == update ) ]] || { echo "usage: $0 check|update" >&2; exit 2; }
command -v npm >/dev/null || { echo "$0: npm not found" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "uplot@$VERSION" >/dev/null && tar -xzf "uplot-$VERSION.tgz")
fetched="$work/fetched"
mkdir "$fetched"
for name in "${FILES[@]}"; do
  case $name in
    LICENSE) cp "$work/package/LICENSE" "$fetched/" ;;
    *) cp "$work/package/dist/$name" "$fetched/" ;;
  esac
done
grep -q "(v$VERSION)" "$fetched/uPlot.iife.min.js" || { echo "$0: the fetched script is not v$VERSION" >&2; exit 1; }

if [[ $1 == update ]]; then
  mkdir -p "$vendored"
  cp "${FILES[@]/#/$fetched/}" "$vendored/"
  (cd "$vendored" && sha256sum -- "${FILES[@]}") > "$sums"
  echo "vendored uPlot $VERSION into $vendored; checksums in $sums" >&2
  exit 0
fi

(cd "$fetched" && sha256sum --check --strict --quiet "$sums") || {
  echo "$0: uplot@$VERSION from the registry differs from $sums" >&2
  exit 1
}
(cd "$vendored" && sha256sum --check --strict --quiet "$sums") || {
  echo "$0: the vendored files differ from $sums" >&2
  exit 1
}
echo "uPlot $VERSION: the registry's files and the vendored copies match $sums" >&2
