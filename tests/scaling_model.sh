#!/usr/bin/env bash
# scaling_model.sh — unit tests of scripts/scaling_model.py (tests/test_scaling_model.py):
# toy profiles whose step times are computed by hand. Needs python3 (numpy not required).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${QT_PYTHON:-/usr/bin/python3}
[ -x "$PY" ] || PY=python3
command -v "$PY" >/dev/null || { echo "skip: no python3"; exit 77; }
exec "$PY" tests/test_scaling_model.py
