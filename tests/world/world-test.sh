#!/bin/bash
# meson test `world`: check every scenario row against the running test world.
# Uses the world in $WORLD when scripts/run-tests.sh started one; otherwise starts a private
# world, checks it, stops it, and checks that none of its processes is left running.
# Prints "world-check: N passed, M failed" (and "world-teardown: ..." for a private world).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3

if [ -n "${WORLD:-}" ] && [ -s "$WORLD/world.env" ]; then
    exec "$PY" "$here/check-world.py" "$WORLD"
fi

work=$(mktemp -d /tmp/tlspolicyd-world.XXXXXX)
cleanup() { "$here/stop-world.sh" "$work"; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
"$PY" "$here/world.py" start "$work" >/dev/null || { echo "world-check: 0 passed, 1 failed"; exit 1; }
pids=$(awk '{print $1}' "$work/pids")
"$PY" "$here/check-world.py" "$work"
rc=$?
"$here/stop-world.sh" "$work"
"$here/teardown-check.sh" "$work" $pids || rc=1
exit $rc
