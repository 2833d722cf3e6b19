#!/bin/bash
# Stop exactly the processes listed in WORLD/pids (lines "PID EXE LABEL", written by world.py).
# A PID is signalled only while /proc/PID/exe still has the basename EXE it had at start, so a
# recycled PID is never hit.  SIGTERM, up to 5 s, then SIGKILL.  Idempotent.
set -u
[ $# -eq 1 ] || { echo "usage: $0 WORLD" >&2; exit 2; }
pidfile="$1/pids"
[ -s "$pidfile" ] || exit 0

ours() {  # ours PID EXE: PID is alive (not a zombie) and runs EXE
    local exe st
    exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
    st=$(awk '/^State:/{print $2}' "/proc/$1/status" 2>/dev/null)
    [ "${exe##*/}" = "$2" ] && [ "$st" != Z ]
}

pids=()
exes=()
while read -r pid exe _label; do
    [ -n "${pid:-}" ] || continue
    if ours "$pid" "$exe"; then
        kill -TERM "$pid" 2>/dev/null && { pids+=("$pid"); exes+=("$exe"); }
    fi
done < "$pidfile"

left=0
for _ in $(seq 50); do
    left=0
    for i in "${!pids[@]}"; do
        ours "${pids[$i]}" "${exes[$i]}" && left=$((left + 1))
    done
    [ "$left" -eq 0 ] && break
    sleep 0.1
done
if [ "$left" -gt 0 ]; then
    for i in "${!pids[@]}"; do
        if ours "${pids[$i]}" "${exes[$i]}"; then
            echo "stop-world: ${exes[$i]} (${pids[$i]}) ignored SIGTERM, sending SIGKILL" >&2
            kill -KILL "${pids[$i]}" 2>/dev/null || true
        fi
    done
fi
rm -f "$pidfile"
exit 0
