#!/usr/bin/env bash
# Install amazon-kclpy (the KCL MultiLangDaemon's Python side) into the environment of PYTHON.
#
#   bash deploy/kcl/install_kclpy.sh PYTHON               its Python modules only, no jars (for tests)
#   bash deploy/kcl/install_kclpy.sh PYTHON --with-jars   with the KCL jars, as in the processor image
#
# amazon-kclpy ships no jars: while its wheel is built, its setup.py downloads the ~90 jars listed in
# its pom.xml from Maven Central (or from $KCL_MVN_REPO_SEARCH_URL, a Maven mirror), and fails when it
# cannot, as on machines that reach only PyPI. The build runs in a throwaway virtual environment with
# the pinned setuptools, wheel and pytest-runner of deploy/docker/Dockerfile.kcl.
#
# Without --with-jars the result is enough for tests that drive `shelfstream kcl-processor` with the
# daemon's JSON messages, not to run the daemon (deploy/kcl/launch.py --check refuses it). It is
# amazon-kclpy's own source, packed by setuptools' own commands instead of its jar-downloading ones,
# and installed as version <version>+nojars so `pip list` says what it is; no file is faked.
set -euo pipefail

KCLPY_VERSION=3.2.0   # keep in step with KCLPY_VERSION in deploy/docker/Dockerfile.kcl
BUILD_TOOLS=(pip==25.3 setuptools==80.9.0 wheel==0.45.1 pytest-runner==6.0.1)

usage() {
  echo "usage: $0 PYTHON [--with-jars]" >&2
  exit 2
}

[[ $# -ge 1 && $# -le 2 ]] || usage
target_python=$1
with_jars=false
if [[ $# -eq 2 ]]; then
  [[ $2 == --with-jars ]] || usage
  with_jars=true
fi
command -v "$target_python" >/dev/null 2>&1 || { echo "$0: no python at $target_python" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$target_python" -m venv "$work/build"
build_python="$work/build/bin/python"
"$build_python" -m pip install --quiet --disable-pip-version-check --no-cache-dir "${BUILD_TOOLS[@]}"

if $with_jars; then
  "$build_python" -m pip wheel --quiet --disable-pip-version-check --no-cache-dir --no-deps --no-build-isolation \
    --wheel-dir "$work/wheels" "amazon-kclpy==${KCLPY_VERSION}"
else
  "$build_python" -m pip download --quiet --disable-pip-version-check --no-cache-dir --no-deps --no-binary=:all: \
    --no-build-isolation --dest "$work/sdist" "amazon-kclpy==${KCLPY_VERSION}"
  tar -xzf "$work/sdist/amazon_kclpy-${KCLPY_VERSION}.tar.gz" -C "$work"
  (cd "$work/amazon_kclpy-${KCLPY_VERSION}" && "$build_python" - "$work/wheels" <<'PY'
"""Run amazon-kclpy's setup.py without its command classes: their `install` (which setuptools'
bdist_wheel runs) and `bdist_wheel` download the jars; setuptools' own pack the Python modules."""
import sys

import setuptools

out = sys.argv[1]
real_setup = setuptools.setup


def setup(**kwargs):
    kwargs["cmdclass"] = {}
    kwargs["version"] += "+nojars"
    kwargs["description"] = "amazon-kclpy's Python modules without the KCL jars (for shelfstream's tests)"
    return real_setup(**kwargs)


setuptools.setup = setup
sys.argv = ["setup.py", "--quiet", "bdist_wheel", "--dist-dir", out]
with open("setup.py", encoding="utf-8") as source:
    code = compile(source.read(), "setup.py", "exec")
exec(code, {"__name__": "__main__", "__file__": "setup.py"})
PY
  )
fi

"$target_python" -m pip install --quiet --disable-pip-version-check --no-cache-dir --no-deps --force-reinstall \
  "$work"/wheels/amazon_kclpy-*.whl
"$target_python" - "$with_jars" <<'PY'
import pathlib
import sys

import amazon_kclpy
from amazon_kclpy.v3 import processor  # noqa: F401 - the interface shelfstream's record processor uses

jars = sorted((pathlib.Path(amazon_kclpy.__file__).parent / "jars").glob("*.jar"))
if sys.argv[1] == "true" and not any(j.name.startswith("amazon-kinesis-client-multilang-") for j in jars):
    sys.exit("amazon-kclpy was installed without its KCL jars")
print(f"amazon-kclpy installed, {len(jars)} KCL jars", file=sys.stderr)
PY
