#!/usr/bin/env bash
# Sets everything up, then runs the demo: the example app released four times
# under steady traffic, with one release refused and one rolled back.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
exec python examples/demo.py "$@"
