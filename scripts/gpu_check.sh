#!/usr/bin/env bash
# The first thing to run on a GPU machine (README "GPU check"): installs y7nas's pure-Python
# dependencies from wheels carried in WHEELS (default .whl/, for a machine without network),
# then runs scripts/gpu_check.py with the arguments given (default --device cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS="${WHEELS:-.whl}"
if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/y7nas-site "$WHEELS"/*.whl
    export PYTHONPATH="/tmp/y7nas-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
exec python3 scripts/gpu_check.py "$@"
