#!/usr/bin/env bash
# Draw the community map of a map directory (meshd map export DIR, or [map] export_dir)
# with docs/map/index.html in headless Chromium and save it as a PNG:
#   docs/map/screenshot.sh DIR OUT.png [WIDTHxHEIGHT]
# The files are validated against docs/map/*.schema.json first. Needs Debian's chromium
# (apt-get install chromium); nothing is fetched from the network.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=$1 out=$2 size=${3:-1000x640}
python3 - "$dir" "$here" <<'PY'
import json, sys, jsonschema
from pathlib import Path
data, docs = Path(sys.argv[1]), Path(sys.argv[2])
for name in ("meshviewer", "nodelist"):
    jsonschema.validate(
        json.loads((data / f"{name}.json").read_text()),
        json.loads((docs / f"{name}.schema.json").read_text()),
    )
print(f"{data}: meshviewer.json and nodelist.json follow yanic's schemas")
PY
page=$(mktemp -d)
trap 'rm -rf "$page"' EXIT
cp "$here/index.html" "$dir/meshviewer.json" "$dir/nodelist.json" "$page/"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --allow-file-access-from-files --virtual-time-budget=5000 \
    --window-size="${size/x/,}" --screenshot="$(realpath -m "$out")" \
    "file://$page/index.html" 2>/dev/null
echo "wrote $out"
