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
# Most tests wait on processes and sockets rather than the CPU, so more
# workers than cores shorten the run. A short base folder of its own keeps
# the routers' Unix socket paths under their 107-byte limit.
base=$(mktemp -d /tmp/vt.XXXXXX)
trap 'rm -rf "$base"' EXIT
pytest -q -p no:cacheprovider -n "${VERGER_TEST_WORKERS:-3}" --dist loadfile \
  --basetemp="$base" "$@"
