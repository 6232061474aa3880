#!/usr/bin/env bash
# Install everything, then run lint, types and every test tier (netns tests need root).
set -euo pipefail
cd "$(dirname "$0")"
./install.sh
export PATH="$PWD/.venv/bin:$PATH"
ruff check .
ruff format --check .
mypy meshd
python -m pytest -q -p no:cacheprovider tests "$@"
