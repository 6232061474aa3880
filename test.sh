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
pytest=(python -m pytest -q -rs -p no:cacheprovider)
if [ $# -gt 0 ]; then
    exec "${pytest[@]}" --durations=30 "$@"
fi
# The tiers that time nothing (unit, dashboard, provisioning) on every core; then the netns
# and VM tiers on two workers, a module each (the VM tier, the longest, first); then the
# modules marked timed (they measure time, CPU or rates, or the host's own state) alone.
failed=0
# The VM tier's image (built once, then cached) is made meanwhile where guests can boot;
# the netns tier starts only once it is done. A failed build is the VM tier's to report.
image=""
if [ "$(id -u)" = 0 ] && command -v mmdebstrap >/dev/null; then
    netns-testbed/vm image >.venv/vm-image.log 2>&1 &
    image=$!
fi
parallel=(tests/unit tests/tui tests/provisioning)
"${pytest[@]}" --durations=10 -n auto "${parallel[@]}" || failed=1
if [ -n "$image" ] && ! wait "$image"; then
    echo "test.sh: building the VM image failed (.venv/vm-image.log):" >&2
    tail -n 20 .venv/vm-image.log >&2
fi
# Everything else under tests/ (the netns and VM tiers, and any tier added later).
rest=(tests "${parallel[@]/#/--ignore=}")
"${pytest[@]}" --durations=30 -m "not timed" -n 2 --dist loadfile --no-loadscope-reorder \
    "${rest[@]}" || failed=1
"${pytest[@]}" --durations=30 -m timed "${rest[@]}" || failed=1
exit "$failed"
