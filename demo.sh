#!/usr/bin/env bash
# Install everything, start the demo mesh (netns-testbed/topologies/demo.toml) and watch it.
# Ctrl-C stops the watch and takes the whole mesh down again. Needs root.
set -euo pipefail
cd "$(dirname "$0")"
./install.sh
export PATH="$PWD/.venv/bin:$PATH"
tb=netns-testbed/testbed
node=${1:-a}
$tb down >/dev/null 2>&1 || true
trap '$tb down' EXIT
$tb up netns-testbed/topologies/demo.toml --wait
$tb wait-converged --timeout 60 || true
$tb status
if [ -t 1 ]; then
    $tb exec "$node" -- meshd tui
else
    $tb exec "$node" -- meshd status
fi
