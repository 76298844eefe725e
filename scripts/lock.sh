#!/usr/bin/env bash
# Rewrites requirements.lock from a fresh environment holding pyproject's dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q ".[dev]"
{
  echo "# Pinned versions of every Python package verger and its tests use."
  echo "# Regenerate with: scripts/lock.sh"
  "$tmp/venv/bin/pip" freeze --exclude verger
} >requirements.lock
