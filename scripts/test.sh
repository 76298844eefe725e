#!/usr/bin/env bash
# Sets everything up, then runs the linters, the type checker and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff format --check"
ruff format --check src tests bench examples
echo "== ruff check"
ruff check src tests bench examples
echo "== mypy"
mypy
echo "== pytest"
pytest -q -p no:cacheprovider "$@"
