#!/usr/bin/env bash
# Fetch the KCL MultiLangDaemon's jars into DIR with Maven and check them against deploy/kcl/jars.sha256.
#
#   bash deploy/kcl/fetch_jars.sh DIR            fetch (Maven's local repository caches them) and check
#   bash deploy/kcl/fetch_jars.sh DIR --record   fetch and write jars.sha256 anew (after a pom.xml change)
#
# The list is deploy/kcl/pom.xml (amazon-kclpy's own, one jar per dependency, nothing transitive).
# DIR ends up with exactly the listed jars, each with the listed checksum, or the script fails and
# removes DIR, so a half-fetched directory is never taken for a good one. `make kcl-jars` runs it
# into .cache/kcl-jars (never committed); the KCL image runs it in its build stage.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
[[ $# -ge 1 && $# -le 2 ]] || { echo "usage: $0 DIR [--record]" >&2; exit 2; }
dir=$1
record=false
if [[ $# -eq 2 ]]; then
  [[ $2 == --record ]] || { echo "usage: $0 DIR [--record]" >&2; exit 2; }
  record=true
fi
command -v mvn >/dev/null || { echo "$0: mvn not found (install Maven and Java 17)" >&2; exit 2; }

rm -rf "$dir"
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
trap 'rm -rf "$dir"' ERR
mvn --batch-mode --quiet --file "$here/pom.xml" -Dkcl.jars.dir="$dir" dependency:copy-dependencies

if $record; then
  (cd "$dir" && sha256sum -- *.jar) > "$here/jars.sha256"
  echo "recorded $(wc -l < "$here/jars.sha256") jars in $here/jars.sha256" >&2
  exit 0
fi

expected=$(awk '{print $2}' "$here/jars.sha256" | sort)
actual=$(cd "$dir" && ls -- *.jar | sort)
if [[ "$expected" != "$actual" ]]; then
  echo "$0: the fetched jars differ from deploy/kcl/jars.sha256:" >&2
  diff <(echo "$expected") <(echo "$actual") >&2 || true
  false
fi
(cd "$dir" && sha256sum --check --quiet "$here/jars.sha256")
echo "$(wc -l < "$here/jars.sha256") KCL jars in $dir, checksums match deploy/kcl/jars.sha256" >&2
