#!/bin/bash
# Smoke test for the DNS half of the test world: start it in a temp dir, check DNSSEC
# outcomes with getdns (validating itself, stub mode) and unbound (validating resolver),
# stop it, and check that nothing we started is left running.
#
# Usage: tests/world/dns-smoke.sh      (KEEP=1 keeps the temp dir for inspection)
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/tlspolicyd-dns-smoke.XXXXXX)
pass=0
fail=0
ourpids=""

cleanup() {
    "$here/stop-dns.sh" "$work" || true
    if [ "${KEEP:-0}" = 1 ]; then
        echo "dns-smoke: kept $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ok()  { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }

t0=$(date +%s%N)
if ! line=$("$here/start-dns.sh" "$work"); then
    echo "FAIL start-dns.sh"
    echo "dns-smoke: 0 passed, 1 failed"
    exit 1
fi
t1=$(date +%s%N)
echo "# $line (start took $(( (t1 - t0) / 1000000 )) ms)"
# shellcheck disable=SC1091
. "$work/world.env"
ourpids=$(awk '{print $1}' "$work/pids")

# getdns_check SERVER NAME TYPE EXPECTED_DNSSEC_STATUS
getdns_check() {
    local out st rc
    out=$(timeout --foreground 10 getdns_query -s "@$1" -f "$ANCHOR" +dnssec_return_status \
          +dnssec_return_all_statuses "$2" "$3" 2>&1)
    st=$(printf '%s\n' "$out" | sed -n 's/.*"dnssec_status": GETDNS_DNSSEC_\([A-Z_]*\).*/\1/p' | head -n1)
    rc=$(printf '%s\n' "$out" | sed -n 's/.*"rcode": GETDNS_RCODE_\([A-Z_]*\).*/\1/p' | head -n1)
    if [ "$st" = "$4" ]; then
        ok "getdns @$1 $2 $3 -> $st (rcode $rc)"
    else
        bad "getdns @$1 $2 $3 -> '${st:-none}' (rcode ${rc:-none}), expected $4"
    fi
}

# unbound_check NAME TYPE EXPECTED ("rcode=N ad=N" prefix of probe.py output)
unbound_check() {
    local out
    out=$("$here/dns/probe.py" --query "$1" "$2" "$UNBOUND")
    case "$out" in
        "$3"*) ok "unbound $1 $2 -> $out" ;;
        *)     bad "unbound $1 $2 -> $out, expected $3" ;;
    esac
}

# getdns in stub mode straight at nsd (getdns builds and validates the chain itself).
getdns_check "$NSD" secure.test MX SECURE
getdns_check "$NSD" _25._tcp.mx.secure.test TLSA SECURE
getdns_check "$NSD" nullmx.test MX SECURE
getdns_check "$NSD" smartmx.test MX SECURE
getdns_check "$NSD" insecure.test MX INSECURE
getdns_check "$NSD" mx.insecure.test A INSECURE
getdns_check "$NSD" bogus.test MX BOGUS
getdns_check "$NSD" badds.test MX BOGUS
# getdns through unbound (getdns sets CD=1, so it still validates itself).
getdns_check "$UNBOUND" secure.test MX SECURE
getdns_check "$UNBOUND" insecure.test MX INSECURE
getdns_check "$UNBOUND" bogus.test MX BOGUS
# unbound's own validation: AD on secure, no AD on insecure, SERVFAIL on bogus.
unbound_check secure.test MX "rcode=0 ad=1"
unbound_check _25._tcp.mx.secure.test TLSA "rcode=0 ad=1"
unbound_check insecure.test MX "rcode=0 ad=0"
unbound_check bogus.test MX "rcode=2"
unbound_check badds.test MX "rcode=2"
unbound_check nope.secure.test A "rcode=3 ad=1"

# Stop now (the trap would too) and check that none of our processes survived.
"$here/stop-dns.sh" "$work"
left=""
for _ in $(seq 20); do
    left=""
    for p in $ourpids; do
        # a zombie (state Z) waits for PID 1 to reap it: it runs nothing, so it is not "left"
        st=$(awk '/^State:/{print $2}' "/proc/$p/status" 2>/dev/null) || continue
        [ -n "$st" ] && [ "$st" != Z ] && left="$left $p"
    done
    [ -z "$left" ] && break
    sleep 0.1
done
procs=$(ps -eo pid=,stat=,args=)   # snapshot first, so our own grep is not in it
stray=$(printf '%s\n' "$procs" | grep -F "$work" | awk '$2 !~ /Z/')
if [ -z "$left" ] && [ -z "$stray" ]; then
    ok "nothing left running"
else
    bad "left running:$left $stray"
fi

echo "dns-smoke: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
