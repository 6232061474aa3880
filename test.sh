#!/usr/bin/env bash
# Install everything, then run lint, types and every test tier (netns tests need root).
set -euo pipefail
cd "$(dirname "$0")"
./install.sh
export PATH="$PWD/.venv/bin:$PATH"
ruff check .
ruff format --check .
mypy meshd/routing meshd/proto meshd/membership meshd/transport meshd/wg meshd/discovery \
    meshd/net/hello_socket.py meshd/config.py meshd/identity.py meshd/addressing.py meshd/node.py \
    meshd/mesh.py meshd/trust.py
python -m pytest -q -p no:cacheprovider tests "$@"
