#!/bin/bash
# Stop exactly the processes listed in OUTDIR/pids (written by start-dns.sh).
# SIGTERM, wait up to 5 s, then SIGKILL.  Idempotent: a missing/empty pids file is fine.
# A PID is signalled only if it is still the program we started (checked via /proc/PID/exe).
set -u
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
pidfile="$1/pids"
[ -s "$pidfile" ] || exit 0

ours() {  # ours PID NAME: true if PID is alive and runs /usr/sbin/NAME
    local exe
    exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
    [ "${exe##*/}" = "$2" ]
}

pids=()
names=()
while read -r pid name; do
    [ -n "${pid:-}" ] || continue
    if ours "$pid" "$name"; then
        kill -TERM "$pid" 2>/dev/null && { pids+=("$pid"); names+=("$name"); }
    fi
done < "$pidfile"

left=${#pids[@]}
for _ in $(seq 50); do
    left=0
    for i in "${!pids[@]}"; do
        ours "${pids[$i]}" "${names[$i]}" && left=$((left + 1))
    done
    [ "$left" -eq 0 ] && break
    sleep 0.1
done
if [ "$left" -gt 0 ]; then
    for i in "${!pids[@]}"; do
        if ours "${pids[$i]}" "${names[$i]}"; then
            echo "stop-dns: ${names[$i]} (${pids[$i]}) ignored SIGTERM, sending SIGKILL" >&2
            kill -KILL "${pids[$i]}" 2>/dev/null || true
        fi
    done
fi
rm -f "$pidfile"
exit 0
