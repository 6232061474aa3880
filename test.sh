#!/usr/bin/env bash
# Install everything, then run lint, types and every test tier (netns tests need root).
set -euo pipefail
cd "$(dirname "$0")"
./install.sh
export PATH="$PWD/.venv/bin:$PATH"
ruff check .
ruff format --check .
mypy meshd
# -rs: every skip with its reason. Under CI=true a skipped netns test fails the run
# (tests/conftest.py): CI runs as root, so the skip means something is missing.
# --durations: the slowest, to keep the whole run within CI's time.
python -m pytest -q -rs --durations=30 -p no:cacheprovider tests "$@"
