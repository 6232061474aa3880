#!/usr/bin/env bash
# tests/golden/state_v1/make_state.sh: remake this fixture, the state directories and configs
# of two nodes made by meshd's first release (commit 111bccd) on its own netns testbed.
#
# As root, on a machine with ip netns, wireguard-go and wg, nftables and sqlite3:
#
#     sudo tests/golden/state_v1/make_state.sh
#
# Runs the first release's code only: its tree is /tmp/v1 when that is a clean checkout of
# 111bccd (MESHD_V1_TREE names another), else an export of 111bccd (git archive) in a temp
# dir. The Python is this checkout's .venv (MESHD_V1_PYTHON), used only for its packages:
# PYTHONPATH puts the old tree first, and the script checks that `import meshd` finds it.
#
# What it does: testbed up (two nodes a - b, each with a household LAN host), one invite
# from a, pings from each LAN host to the other node's mesh address (b relays them for a
# and a for b: the first release counts and receipts only forwarded traffic), waits until
# each node holds at least MIN_RECEIPTS receipts in each role and nothing is left
# unreceipted, stops both daemons with SIGTERM, checkpoints every SQLite file, copies
# state/ and meshd.toml of each node here (a/, b/), then takes the testbed down. The
# testbed is taken down on every exit (trap), failures included.
#
# Environment: MESHD_TESTBED_ID (default v1fx), MESHD_TESTBED_DIR (default
# /run/meshd-testbed-$MESHD_TESTBED_ID), MIN_RECEIPTS (default 3), CERT_VALIDITY_S (the
# membership certificates' validity in seconds; default: the old testbed's 30 days, as in
# the committed copy; the delegations stay at 30 days either way).
set -euo pipefail

V1_COMMIT=111bccde6c9875cf32a11e3a98cec75b3a8be841
here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
repo="$(git -C "$here" rev-parse --show-toplevel)"
python="${MESHD_V1_PYTHON:-$repo/.venv/bin/python}"
export MESHD_TESTBED_ID="${MESHD_TESTBED_ID:-v1fx}"
export MESHD_TESTBED_DIR="${MESHD_TESTBED_DIR:-/run/meshd-testbed-$MESHD_TESTBED_ID}"
export PYTHONDONTWRITEBYTECODE=1 # nothing written into the old tree
min_receipts="${MIN_RECEIPTS:-3}"
validity="${CERT_VALIDITY_S:-}"
tb="$MESHD_TESTBED_DIR"

say() { printf 'make_state: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (network namespaces)"
for tool in ip wireguard-go wg nft sqlite3 ping; do
    command -v "$tool" >/dev/null || die "missing: $tool"
done
[ -x "$python" ] || die "no Python at $python (MESHD_V1_PYTHON)"
[[ -z "$validity" || "$validity" =~ ^[1-9][0-9]*$ ]] || die "CERT_VALIDITY_S: expected seconds"
[ -e "$tb" ] && die "$tb exists: another testbed with this directory is up (testbed down first)"

work="$(mktemp -d /tmp/meshd-state-v1.XXXXXX)"
up=0
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "$up" = 1 ] || [ -e "$tb" ]; then
        say "testbed down"
        "$python" -m nstestbed down >&2 || rc=1
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# -- the first release's tree ---------------------------------------------------------------
v1="${MESHD_V1_TREE:-/tmp/v1}"
if [ -d "$v1/.git" ] || [ -f "$v1/.git" ]; then
    head="$(git -C "$v1" rev-parse HEAD)"
    [ "$head" = "$V1_COMMIT" ] || die "$v1 is at $head, not $V1_COMMIT"
    [ -z "$(git -C "$v1" status --porcelain --untracked-files=no)" ] || die "$v1 has changes"
else
    v1="$work/v1"
    mkdir "$v1"
    git -C "$repo" archive "$V1_COMMIT" | tar -x -C "$v1"
    say "exported $V1_COMMIT to $v1"
fi
export PYTHONPATH="$v1:$v1/netns-testbed"
found="$("$python" -c 'import meshd, nstestbed; print(meshd.__file__, nstestbed.__file__)')"
[ "$found" = "$v1/meshd/__init__.py $v1/netns-testbed/nstestbed/__init__.py" ] ||
    die "import meshd finds $found, not the first release at $v1"

v1meshd() { # NODE ARGS...: the old meshd in NODE's namespace, as that node's operator
    local node="$1"
    shift
    ip netns exec "$MESHD_TESTBED_ID-$node" env MESHD_SOCKET="$tb/nodes/$node/meshd.sock" \
        "$python" -m meshd "$@"
}
status_json() { v1meshd "$1" status --json; }

# -- up ---------------------------------------------------------------------------------------
cat >"$work/line2lan.toml" <<'EOF'
# a - b over one point-to-point link (topologies/line2.toml), each with a household LAN
# host: what a LAN host sends to the other node is forwarded by its own node, the traffic
# the first release meters and receipts.
[nodes.a]
lan = true

[nodes.b]
lan = true

[[links]]
between = ["a", "b"]
EOF
if [ -n "$validity" ]; then
    sed -i "s/^lan = true\$/lan = true\ncert_validity_s = $validity/" "$work/line2lan.toml"
fi
up=1
"$python" -m nstestbed up "$work/line2lan.toml" --wait --timeout 60 >&2
"$python" -m nstestbed wait-converged --timeout 60 >&2

declare -A pid
for node in a b; do
    pid[$node]="$("$python" -c 'import json, sys
print(json.load(open(sys.argv[1]))["meshd_pids"][sys.argv[2]])' "$tb/state.json" "$node")"
    p="${pid[$node]}"
    # The daemon is `python -m meshd` with the old tree first on its PYTHONPATH...
    tr '\0' ' ' <"/proc/$p/cmdline" | grep -q -- "-m meshd run --config $tb/nodes/$node/meshd.toml" ||
        die "pid $p is not $node's meshd"
    tr '\0' '\n' <"/proc/$p/environ" | grep -qx "PYTHONPATH=$v1:.*" ||
        die "$node's meshd (pid $p) does not run with $v1 first on PYTHONPATH"
    # ... and answers as the first release does: no certificate directory in its status.
    status_json "$node" >"$work/status-$node.json"
    "$python" - "$work/status-$node.json" <<'EOF' || die "$node's status is not the first release's"
import json, sys
keys = set(json.load(open(sys.argv[1])))
want = {"node_id", "name", "mesh_ipv4", "mesh_ipv6", "backend", "routing", "uptime_s",
        "membership", "clock", "mesh", "neighbours", "routes", "gateway", "usage", "receipts"}
sys.exit(0 if keys == want else f"status keys {sorted(keys ^ want)} differ")
EOF
    say "$node: meshd pid $p runs the first release ($v1)"
done

# -- an invite from a (its delegation lets it issue them): invites.sqlite in a's state -------
v1meshd a invite --name c --config "$tb/nodes/a/meshd.toml" >"$work/invite.out"
[ -s "$tb/nodes/a/state/invites.sqlite" ] || die "no invites.sqlite after meshd invite"

# -- traffic: each LAN host pings the other node's mesh address ------------------------------
# 84-byte packets, 80 each way in 40 s: about 13 KB a direction, well inside the receipts'
# tolerance (256 KiB: the consumer's own counters do not see its neighbour's LAN traffic,
# which reaches it from the neighbour's mesh address), spread over several claim intervals.
ip netns exec "$MESHD_TESTBED_ID-a-lan" ping -q -n -i 0.5 -c 80 10.77.0.2 >"$work/ping-a.out" &
ping_a=$!
ip netns exec "$MESHD_TESTBED_ID-b-lan" ping -q -n -i 0.5 -c 80 10.77.0.1 >"$work/ping-b.out" &
ping_b=$!
wait "$ping_a" || die "ping from a's LAN failed: $(cat "$work/ping-a.out")"
wait "$ping_b" || die "ping from b's LAN failed: $(cat "$work/ping-b.out")"
say "pings: $(grep -h 'packets transmitted' "$work"/ping-*.out | tr '\n' ';')"

# -- receipts: wait until every claim is answered and each role holds min_receipts ------------
settled() { # NODE: its usage of the other node is all receipted, both ways
    local node="$1" self
    status_json "$node" >"$work/status-$node.json" || return 1
    self="$("$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["node_id"])' \
        "$work/status-$node.json")"
    local db="$tb/nodes/$node/state/ledger.sqlite"
    local as_provider as_consumer
    as_provider="$(sqlite3 "$db" "SELECT count(*) FROM receipts WHERE provider = '$self'")"
    as_consumer="$(sqlite3 "$db" "SELECT count(*) FROM receipts WHERE consumer = '$self'")"
    [ "$as_provider" -ge "$min_receipts" ] && [ "$as_consumer" -ge "$min_receipts" ] || return 1
    "$python" - "$work/status-$node.json" <<'EOF'
import json, sys
for use in json.load(open(sys.argv[1]))["usage"]:
    p = use.get("provider") or {}
    counted = (use["relayed_for_bytes"], use["relayed_to_bytes"])
    claimed = (p.get("claimed_for_bytes"), p.get("claimed_to_bytes"))
    if claimed != counted or p.get("unreceipted_bytes") != 0:
        sys.exit(1)
EOF
}
deadline=$((SECONDS + 120))
until settled a && settled b; do
    [ "$SECONDS" -lt "$deadline" ] || die "receipts not settled within 120 s"
    sleep 2
done
for node in a b; do
    say "$node: $(sqlite3 "$tb/nodes/$node/state/ledger.sqlite" 'SELECT count(*) FROM receipts') receipts"
done

# -- stop both daemons cleanly (SIGTERM), then copy ------------------------------------------
kill -TERM "${pid[a]}" "${pid[b]}"
for node in a b; do
    for _ in $(seq 100); do
        [ -d "/proc/${pid[$node]}" ] && ! grep -q '^State:.*Z' "/proc/${pid[$node]}/status" 2>/dev/null || break
        sleep 0.1
    done
    [ -d "/proc/${pid[$node]}" ] && ! grep -q '^State:.*Z' "/proc/${pid[$node]}/status" 2>/dev/null &&
        die "$node's meshd (pid ${pid[$node]}) did not stop within 10 s of SIGTERM"
    say "$node: meshd stopped: $(tail -n 1 "$tb/nodes/$node/meshd.log")"
done

stage="$work/fixture"
for node in a b; do
    src="$tb/nodes/$node"
    for db in "$src"/state/*.sqlite; do
        sqlite3 "$db" 'PRAGMA wal_checkpoint(TRUNCATE);' >/dev/null
    done
    mkdir -p "$stage/$node"
    cp -a "$src/state" "$stage/$node/state"
    cp -p "$src/meshd.toml" "$stage/$node/meshd.toml"
    find "$stage/$node/state" \( -name '*-wal' -o -name '*-shm' -o -name '*-journal' -o -type s \) -delete
done

"$python" -m nstestbed down >&2
up=0

for node in a b; do
    rm -rf "${here:?}/$node"
    cp -a "$stage/$node" "$here/$node"
done
say "done: $(cd "$here" && find a b -type f | sort | tr '\n' ' ')"
