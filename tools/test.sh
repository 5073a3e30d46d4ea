#!/usr/bin/env bash
# The README's test command, and what .ci/run runs on a clean clone: installs everything the
# checks and tests need on a machine that has never seen the project, then runs them.
#   - the package with its test extra (the Cython extensions are built here);
#   - promtool (alert rules and /metrics checks) from Debian's prometheus package;
#   - Chromium and its driver (the book page test) from Debian's chromium and chromium-driver;
#   - kubectl (`kubectl kustomize` of the manifests) from Debian's kubernetes-client;
#   - ruff, mypy, then pytest (extra arguments go to pytest).
# PostgreSQL and NATS must be running (tests say how to start them when they are not).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
python3 -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
python3 -m pip install --quiet -e ".[test]"
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v kubectl >/dev/null || missing+=(kubernetes-client)
if [ ${#missing[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
export HFTGW_REQUIRE_BROWSER=1
ruff check .
mypy gateway matching monitoring persistence protocol bench tools
(cd tests && mypy --config-file ../pyproject.toml .)
python3 -m pytest -q "$@"
