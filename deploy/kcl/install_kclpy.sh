#!/usr/bin/env bash
# Install amazon-kclpy's Python side (the record processor's protocol library) into the environment
# of PYTHON:
#
#   bash deploy/kcl/install_kclpy.sh PYTHON
#
# The KCL MultiLangDaemon's jars are not part of it: deploy/kcl/fetch_jars.sh fetches them with Maven
# from the pinned list in deploy/kcl/pom.xml, checked against deploy/kcl/jars.sha256 (`make kcl-jars`;
# the KCL image does the same), and deploy/kcl/launch.py runs the daemon from them.
#
# amazon-kclpy's sdist cannot simply be pip-installed for that: while its wheel is built, its setup.py
# downloads the jars its own pom.xml names (KCL 3.5.3 for 3.2.0, which the project's Maven Central
# does not serve) and fails when it cannot. So this builds the wheel from the same sdist with its
# command classes removed (their `install` and `bdist_wheel` are the download), in a throwaway
# virtual environment with pinned setuptools, wheel and pytest-runner, and installs it as version
# <version>+nojars so `pip list` says what it is; no file is faked.
set -euo pipefail

KCLPY_VERSION=3.2.0   # keep in step with KCLPY_VERSION in deploy/docker/Dockerfile.kcl
BUILD_TOOLS=(pip==25.3 setuptools==80.9.0 wheel==0.45.1 pytest-runner==6.0.1)

[[ $# -eq 1 ]] || { echo "usage: $0 PYTHON" >&2; exit 2; }
target_python=$1
command -v "$target_python" >/dev/null 2>&1 || { echo "$0: no python at $target_python" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$target_python" -m venv "$work/build"
build_python="$work/build/bin/python"
"$build_python" -m pip install --quiet --disable-pip-version-check --no-cache-dir "${BUILD_TOOLS[@]}"

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
    kwargs["description"] = "amazon-kclpy's Python modules without the KCL jars (the KCL jars come from deploy/kcl/fetch_jars.sh)"
    return real_setup(**kwargs)


setuptools.setup = setup
sys.argv = ["setup.py", "--quiet", "bdist_wheel", "--dist-dir", out]
with open("setup.py", encoding="utf-8") as source:
    code = compile(source.read(), "setup.py", "exec")
exec(code, {"__name__": "__main__", "__file__": "setup.py"})
PY
)

"$target_python" -m pip install --quiet --disable-pip-version-check --no-cache-dir --no-deps --force-reinstall \
  "$work"/wheels/amazon_kclpy-*.whl
"$target_python" - <<'PY'
import sys

import amazon_kclpy
from amazon_kclpy.v3 import processor  # noqa: F401 - the interface shelfstream's record processor uses

print(f"amazon-kclpy's Python modules installed from {amazon_kclpy.__file__}", file=sys.stderr)
PY
