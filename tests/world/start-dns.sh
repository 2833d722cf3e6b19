#!/bin/bash
# Start the DNS half of the hermetic test world: nsd (authoritative for the fake signed tree)
# and unbound (validating resolver in front of it), both on 127.0.0.1 high ports.
#
# Usage: tests/world/start-dns.sh OUTDIR
# Prints:  NSD=127.0.0.1@PORT UNBOUND=127.0.0.1@PORT ANCHOR=PATH
# Writes:  OUTDIR/world.env (same values, shell syntax), OUTDIR/pids (one PID per line).
# Stop with tests/world/stop-dns.sh OUTDIR.  Only processes started here are ever signalled.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
mkdir -p "$1"
out=$(cd "$1" && pwd)
PY=/usr/bin/python3
T0=$(date +%s.%N)

if [ -s "$out/pids" ]; then
    echo "start-dns: $out/pids exists; run stop-dns.sh first" >&2
    exit 1
fi

# 1. Zones (generated once per OUTDIR).
if [ ! -s "$out/zones.list" ] || [ ! -s "$out/anchor.ds" ]; then
    "$PY" "$here/dns/gen-zones.py" "$out" >&2
fi

# 2. Two free loopback ports (free for both UDP and TCP at the time of the check).
read -r NSD_PORT UB_PORT < <("$PY" - <<'PYEOF'
import socket
ports = []
while len(ports) < 2:
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.bind(("127.0.0.1", 0))
    p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p))
        if p >= 10000 and p not in ports:
            ports.append(p)
    except OSError:
        pass
    finally:
        u.close()
        t.close()
print(*ports)
PYEOF
)

# 3. nsd config.
mkdir -p "$out/nsd"
{
    cat <<CONF
server:
    ip-address: 127.0.0.1@$NSD_PORT
    port: $NSD_PORT
    do-ip6: no
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "$out/zones"
    database: ""
    zonelistfile: "$out/nsd/zone.list"
    xfrdfile: "$out/nsd/xfrd.state"
    xfrdir: "$out/nsd"
    pidfile: "$out/nsd/nsd.pid"
    logfile: "$out/nsd/nsd.log"
    verbosity: 1
    hide-version: yes
    minimal-responses: yes
    refuse-any: yes
remote-control:
    control-enable: no
CONF
    while read -r zone file; do
        printf 'zone:\n    name: "%s"\n    zonefile: "%s"\n' "$zone" "$file"
    done < "$out/zones.list"
} > "$out/nsd/nsd.conf"

# 4. unbound config: one stub per served zone, so unbound never follows a referral to the
#    glue addresses (which would mean port 53).
mkdir -p "$out/unbound"
{
    cat <<CONF
server:
    interface: 127.0.0.1
    port: $UB_PORT
    outgoing-interface: 127.0.0.1
    do-ip6: no
    chroot: ""
    username: ""
    directory: "$out/unbound"
    pidfile: "$out/unbound/unbound.pid"
    use-syslog: no
    logfile: "$out/unbound/unbound.log"
    verbosity: 1
    val-log-level: 2
    num-threads: 1
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    local-zone: "test." nodefault
    trust-anchor-file: "$out/anchor.ds"
    module-config: "validator iterator"
    qname-minimisation: no
    cache-max-ttl: 30
    cache-max-negative-ttl: 30
remote-control:
    control-enable: no
CONF
    while read -r zone file; do
        printf 'stub-zone:\n    name: "%s"\n    stub-addr: 127.0.0.1@%s\n    stub-prime: no\n' \
            "$zone" "$NSD_PORT"
    done < "$out/zones.list"
} > "$out/unbound/unbound.conf"

nsd-checkconf "$out/nsd/nsd.conf"
unbound-checkconf "$out/unbound/unbound.conf" >/dev/null

# 5. Start both in the foreground mode (-d), detached from our stdio and (setsid) from the
#    caller's terminal process group, so a Ctrl-C reaches only the test, whose trap runs
#    stop-dns.sh.  setsid execs in place here (a background job of a non-interactive shell is
#    not a group leader), so $! is the daemon's PID; checked below.
: > "$out/pids"
setsid nsd -d -c "$out/nsd/nsd.conf" </dev/null >"$out/nsd/stdout.log" 2>&1 &
echo "$! nsd" >> "$out/pids"
setsid unbound -d -c "$out/unbound/unbound.conf" </dev/null >"$out/unbound/stdout.log" 2>&1 &
echo "$! unbound" >> "$out/pids"

# 6. Readiness: first, the PIDs we recorded must be the daemons themselves.
sleep 0.05
while read -r pid name; do
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
    if [ "${exe##*/}" != "$name" ]; then
        echo "start-dns: PID $pid is not $name (exe '${exe}'); it may have exited" >&2
        tail -n 20 "$out/$name/"*.log >&2 2>/dev/null || true
        "$here/stop-dns.sh" "$out" >&2 || true
        exit 1
    fi
done < "$out/pids"
# Then: both must answer a SOA query for "." (unbound: validated, AD set), bounded.
if ! "$PY" "$here/dns/probe.py" --wait 10 "127.0.0.1@$NSD_PORT" "127.0.0.1@$UB_PORT" >&2; then
    echo "start-dns: not ready; logs in $out/nsd and $out/unbound" >&2
    tail -n 20 "$out/nsd/nsd.log" "$out/nsd/stdout.log" "$out/unbound/unbound.log" \
        "$out/unbound/stdout.log" >&2 2>/dev/null || true
    "$here/stop-dns.sh" "$out" >&2 || true
    exit 1
fi

cat > "$out/world.env" <<ENV
NSD=127.0.0.1@$NSD_PORT
NSD_PORT=$NSD_PORT
UNBOUND=127.0.0.1@$UB_PORT
UNBOUND_PORT=$UB_PORT
ANCHOR=$out/anchor.ds
ANCHOR_KEY=$out/anchor.key
ENV
T1=$(date +%s.%N)
echo "start-dns: ready in $(awk "BEGIN{printf \"%.2f\", $T1-$T0}") s" >&2
echo "NSD=127.0.0.1@$NSD_PORT UNBOUND=127.0.0.1@$UB_PORT ANCHOR=$out/anchor.ds"
