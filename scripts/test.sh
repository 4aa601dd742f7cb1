#!/usr/bin/env bash
# Installs everything the tests need on a fresh machine, then runs them.
# Used as-is by CI (.ci/run) and by README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."

# The report test renders report.html in headless Chromium (Debian package).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; the report rendering test will fail in CI" >&2
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test,distributed]'
if [ $# -gt 0 ]; then
  exec .venv/bin/python -m pytest -q "$@"
fi
# Three at a time (pyproject's addopts), then the `quiet` tests alone: they assert that
# the load generator kept up, that one config beats another by a margin, or that repeated
# runs of one config agree (the gate's false alarms), which a test
# sharing the cores with two others cannot promise.
.venv/bin/python -m pytest -q -m "not quiet"
exec .venv/bin/python -m pytest -q -n 0 -m quiet
