#!/usr/bin/env bash
# A Python virtual environment with schemathesis (pinned), for the API conformance test
# (crates/hostel/tests/api_schemathesis.rs). Idempotent: a venv that already has this
# version is left alone. Usage: scripts/api-venv.sh [VENV_DIR] (default: target/venv).
set -euo pipefail
SCHEMATHESIS_VERSION=4.32.5
venv="${1:-$(dirname "$0")/../target/venv}"
if [ -x "$venv/bin/schemathesis" ] \
  && "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('schemathesis') != '$SCHEMATHESIS_VERSION')" 2>/dev/null; then
  exit 0
fi
if ! python3 -m venv "$venv"; then
  echo "api-venv: python3 -m venv failed; install python3-venv (make deps)" >&2
  exit 1
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
"$venv/bin/schemathesis" --version
