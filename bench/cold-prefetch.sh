#!/usr/bin/env bash
# Cold path (issue 9): `tlspolicy prefetch` of N domains against a local DNS server that
# answers every query after DELAY_MS, reporting domains/s, the DNS queries per domain (by
# type and name) and the time against the ideal  queries x delay / concurrency.
#
#   bench/cold-prefetch.sh [BUILD_DIR] [N] [DELAY_MS]      (defaults: build, 1000, 20)
#
# Environment: PARALLEL (prefetch --parallel; default: prefetch's own default, 16),
# REPEATS (3; the table shows every run and the median), MAX_LOAD (0.7: the 1-minute load
# average must be below it before each run), MAX_OTHER_RUN (0.3: cores other processes may
# use during a run, else it is run again, at most 5 times), QUIET_WAIT (1800 s of waiting at
# most).
#
# The DNS server is bench/delay-dns.py (Python stdlib, UDP + TCP on 127.0.0.1): a signed
# fake root (keys made here with dnssec-keygen, signed with dnssec-signzone; its DS is the
# daemon's trust anchor) with an insecure delegation to the unsigned zone bench., where
# dN.bench. has MX mx.dN.bench. and mx.dN.bench. A 127.0.0.1, and _mta-sts.dN.bench. does not
# exist. So every domain's right answer is "not found" (no DANE: insecure MX set; no MTA-STS
# record), computed from insecure, not indeterminate, answers; the script checks that every
# domain got exactly that (the prefetch summary, the exit status and the reason of every row).
# "UDP drops" is the machine's RcvbufErrors during the run (/proc/net/snmp): datagrams the
# kernel dropped because a socket's receive buffer was full; it should be 0 (the DNS server
# asks for a 16 MiB buffer). "others" is CPU used by processes other than the two measured.
# Each run starts with an empty cache file and a fresh DNS server (fresh counts). At the end,
# the queries of one domain prefetched alone are listed with their times (which waits for what).
# Needs dnssec-keygen, dnssec-signzone, dnssec-dsfromkey (bind9-utils), sqlite3, python3.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-build}" && pwd)
n=${2:-1000}
delay=${3:-20}
parallel=${PARALLEL:-}
repeats=${REPEATS:-3}
max_load=${MAX_LOAD:-0.7}
max_other_run=${MAX_OTHER_RUN:-0.3}
quiet_wait=${QUIET_WAIT:-1800}

[ -x "$build/tlspolicy" ] || { echo "cold-prefetch.sh: $build/tlspolicy missing: build first" >&2; exit 2; }
for tool in dnssec-keygen dnssec-signzone dnssec-dsfromkey sqlite3 python3; do
  command -v "$tool" >/dev/null || { echo "cold-prefetch.sh: needs $tool" >&2; exit 2; }
done

dir=$(mktemp -d /tmp/tlspolicyd-cold.XXXXXX)
dns_pid=""
pf_pid=""
cleanup() {
  trap - EXIT INT TERM
  set +e
  [ -n "$pf_pid" ] && kill "$pf_pid" 2>/dev/null && wait "$pf_pid" 2>/dev/null
  if [ -n "$dns_pid" ]; then kill "$dns_pid" 2>/dev/null; wait "$dns_pid" 2>/dev/null; fi
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'echo "cold-prefetch.sh: interrupted" >&2; exit 130' INT TERM

# The signed root. Signing tools never need the network; inside `unshare -n` where possible,
# as tests/world does, so that nothing could leave loopback.
mkdir -p "$dir/zone"
netns=()
unshare -n true 2>/dev/null && netns=(unshare -n)
cat >"$dir/zone/root.zone" <<'ZONE'
$TTL 3600
. SOA ns.bench. hostmaster.bench. 1 3600 600 86400 300
. NS ns.bench.
bench. NS ns.bench.
ns.bench. A 127.0.0.1
ZONE
(
  cd "$dir/zone"
  ksk=$("${netns[@]}" dnssec-keygen -q -K . -a ECDSAP256SHA256 -n ZONE -f KSK .)
  "${netns[@]}" dnssec-keygen -q -K . -a ECDSAP256SHA256 -n ZONE . >/dev/null
  "${netns[@]}" dnssec-signzone -q -S -K . -o . -f root.signed -O full root.zone >/dev/null
  dnssec-dsfromkey -2 "$ksk.key" >../anchor.ds
)

# One port free for both UDP and TCP.
port=$(python3 - <<'PY'
import socket
for _ in range(100):
    t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p))
    except OSError:
        continue
    print(p); break
PY
)

python3 -c "
for i in range($n): print('d%d.bench' % i)" >"$dir/domains"

cat >"$dir/c.toml" <<CONF
[dns]
resolvers = ["127.0.0.1:$port"]
trust_anchor_file = "$dir/anchor.ds"
[cache]
path = "$dir/cache.sqlite"
[control]
address = "off"
CONF

. "$(dirname "$0")/cpu.sh"  # hz, cpu_busy, proc_cpu, children_cpu
udp_drops() { awk '/^Udp: [0-9]/ {print $6}' /proc/net/snmp; }  # RcvbufErrors, whole machine

waited=0
wait_quiet() {
  while :; do
    local l1; l1=$(cut -d' ' -f1 /proc/loadavg)
    awk -v l="$l1" -v m="$max_load" 'BEGIN { exit !(l >= m) }' || return 0
    if [ "$waited" -ge "$quiet_wait" ]; then
      echo "cold-prefetch.sh: load average still $l1 after ${waited} s; giving up" >&2; exit 3
    fi
    echo "cold-prefetch.sh: waiting for a quiet machine (load average $l1)" >&2
    sleep 15; waited=$((waited + 15))
  done
}

pf_args=(prefetch --no-progress)
[ -n "$parallel" ] && pf_args+=(--parallel "$parallel")
shown_parallel=${parallel:-16}
echo "cold-prefetch.sh: $n domains, ${delay} ms per DNS answer, prefetch --parallel $shown_parallel," \
     "$repeats run(s); $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" >&2
printf 'run\tseconds\tdomains_s\tqueries\tmax_in_flight\tspan_p50\tspan_p90\tprefetch_cores\tdns_cores\tother_cores\tudp_drops\n' >"$dir/runs.tsv"
failed=0
for r in $(seq "$repeats"); do
  attempt=0
  while :; do
    attempt=$((attempt + 1))
    wait_quiet
    rm -f "$dir"/cache.sqlite* "$dir/dns.log"
    python3 "$here/delay-dns.py" --port "$port" --root-zone "$dir/zone/root.signed" \
        --delay-ms "$delay" --stats "$dir/stats.$r.json" >"$dir/dns.log" 2>&1 &
    dns_pid=$!
    for _ in $(seq 100); do grep -qs listening "$dir/dns.log" && break; sleep 0.05; done
    grep -q listening "$dir/dns.log" || { cat "$dir/dns.log" >&2; exit 1; }

    u0=$(udp_drops); b0=$(cpu_busy); d0=$(proc_cpu "$dns_pid"); children_cpu; c0=$children_s; t0=$(date +%s.%N)
    "$build/tlspolicy" -c "$dir/c.toml" "${pf_args[@]}" "$dir/domains" >"$dir/pf.out" 2>"$dir/pf.err" &
    pf_pid=$!
    rc=0; wait "$pf_pid" || rc=$?
    pf_pid=""
    t1=$(date +%s.%N); children_cpu; c1=$children_s; d1=$(proc_cpu "$dns_pid"); b1=$(cpu_busy); u1=$(udp_drops)
    kill "$dns_pid"; wait "$dns_pid" || true; dns_pid=""

    summary=$(cat "$dir/pf.out")
    # Every domain computed, all of them "not found" for the right reason, none failed.
    good=$(sqlite3 "$dir/cache.sqlite" "SELECT count(*) FROM entries WHERE outcome = 'not-found'
             AND reason LIKE 'no DANE (insecure MX set%' AND reason LIKE '%no MTA-STS policy%'" 2>/dev/null || echo 0)
    bad=0
    if [ "$rc" != 0 ] || [[ "$summary" != *": $n not found; $n stored, 0 skipped"* ]] || [ "$good" != "$n" ]; then
      echo "cold-prefetch.sh: run $r: not every domain got the right answer (exit $rc, $good good rows):" >&2
      echo "$summary" >&2; head -20 "$dir/pf.err" >&2
      bad=1
    fi
    python3 - "$dir/stats.$r.json" "$r" "$t0" "$t1" "$n" "$d0" "$d1" "$c0" "$c1" "$hz" "$b0" "$b1" \
        "$((u1 - u0))" >"$dir/row" <<'PY'
import json, sys
stats, r, t0, t1, n, d0, d1, c0, c1, hz, b0, b1, drops = sys.argv[1:]
s = json.load(open(stats))
secs = float(t1) - float(t0)
q = sum(x["count"] for x in s["queries"])
sp = s["domain_span_ms"]
print("\t".join([r, "%.2f" % secs, "%.0f" % (int(n) / secs), str(q), str(s["max_in_flight"]),
                 str(sp["p50"]), str(sp["p90"]),
                 "%.2f" % ((float(c1) - float(c0)) / secs),
                 "%.2f" % ((float(d1) - float(d0)) / float(hz) / secs),
                 "%.2f" % ((float(b1) - float(b0) - float(d1) + float(d0)) / float(hz) / secs
                          - (float(c1) - float(c0)) / secs), drops]))
PY
    other=$(cut -f10 "$dir/row")
    # Other processes busy during the run (beyond MAX_OTHER_RUN cores): run it again.
    if awk -v x="$other" -v m="$max_other_run" 'BEGIN { exit !(x > m) }' && [ "$attempt" -lt 5 ]; then
      echo "cold-prefetch.sh: run $r: other processes used $other cores; running it again" >&2
      continue
    fi
    cat "$dir/row" >>"$dir/runs.tsv"
    [ "$bad" = 0 ] || failed=1
    echo "run $r: $summary" >&2
    break
  done
done

python3 - "$dir" "$n" "$delay" "$shown_parallel" "$repeats" <<'PY'
import csv, json, statistics, sys
d, n, delay, par, repeats = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
runs = list(csv.DictReader(open(d + "/runs.tsv"), delimiter="\t"))
# ideal: the issue's formula, every query waited for one after the other within a domain,
# --parallel domains at once; floor: only the two dependent rounds waited for (MX, then the
# MX host's addresses; _mta-sts TXT beside the MX), --parallel domains at once.
floor = n * 2 * delay / 1000 / par
print("| run | seconds | domains/s | DNS queries | queries/domain | ideal s (queries x %g ms / %d) | seconds / ideal | floor s (2 rounds) | seconds / floor | per-domain time p50 / p90 | queries in flight: average / most | cores: prefetch / DNS server / others | UDP drops |" % (delay, par))
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
rows = []
for r in runs:
    secs, q = float(r["seconds"]), int(r["queries"])
    ideal = q * delay / 1000 / par
    rows.append((secs, q))
    print("| %s | %.1f | %s | %s | %.1f | %.1f | %.2f | %.1f | %.2f | %s / %s ms | %.0f / %s | %s / %s / %s | %s |" % (
        r["run"], secs, r["domains_s"], f"{q:,}", q / n, ideal, secs / ideal, floor, secs / floor,
        r["span_p50"], r["span_p90"], q * delay / 1000 / secs, r["max_in_flight"],
        r["prefetch_cores"], r["dns_cores"], r["other_cores"], r["udp_drops"]))
secs = statistics.median(x[0] for x in rows)
q = statistics.median(x[1] for x in rows)
ideal = q * delay / 1000 / par
print("| median | %.1f | %.0f | %s | %.1f | %.1f | %.2f | %.1f | %.2f | | | | |" % (
    secs, n / secs, f"{q:,.0f}", q / n, ideal, secs / ideal, floor, secs / floor))
# Queries by type and name (the counts of the last run; identical runs give identical counts).
s = json.load(open("%s/stats.%d.json" % (d, repeats)))
print("\nDNS queries of run %d by type and name (dN -> d*), per domain; transport %s:\n" % (
    repeats, ", ".join("%s %d" % kv for kv in sorted(s["transport"].items()))))
print("| type | name | queries | per domain |")
print("|---|---|---|---|")
for x in s["queries"]:
    print("| %s | %s | %s | %.2f |" % (x["type"], x["name"], f"{x['count']:,}", x["count"] / n))
PY
# The queries of one domain prefetched alone, in order, with the time each was received:
# which lookups wait for which (DNSSEC validation queries included).
rm -f "$dir"/cache.sqlite* "$dir/dns.log"
python3 "$here/delay-dns.py" --port "$port" --root-zone "$dir/zone/root.signed" \
    --delay-ms "$delay" --stats "$dir/stats.trace.json" --log "$dir/trace.log" >"$dir/dns.log" 2>&1 &
dns_pid=$!
for _ in $(seq 100); do grep -qs listening "$dir/dns.log" && break; sleep 0.05; done
echo d7.bench | "$build/tlspolicy" -c "$dir/c.toml" prefetch --no-progress >/dev/null
kill "$dns_pid"; wait "$dns_pid" || true; dns_pid=""
echo
echo "The queries for one domain (d7.bench) prefetched alone, ms since the first:"
echo
echo '```'
awk 'NR == 1 { t0 = $1 } { printf "%7.1f ms  %-6s %s\n", $1 - t0, $3, $4 }' "$dir/trace.log"
echo '```'
exit "$failed"
