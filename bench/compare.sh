#!/usr/bin/env bash
# Cached answers side by side (issue 9), in one run on this machine:
#   - the ceiling: bench/ceiling, a fixed-reply epoll server (one per protocol);
#   - tlspolicyd answering from its cache (rows pre-seeded in the SQLite file, loaded into the
#     in-memory PolicyCache at start: the real hot path);
#   - tlspolicyd answering from [overrides] (one static override per key);
#   - Debian's postfix-mta-sts-resolver (mta-sts-daemon, socketmap only) with its SQLite cache
#     backend (Debian's default /etc/mta-sts-daemon.yml) pre-seeded, so it answers from cache.
#
#   bench/compare.sh [BUILD_DIR]          (default: build)
#
# Environment: DURATION (5 s measured), WARMUP (1 s), REPEATS (3), CONNECTIONS ("8 64 256"),
# KEYS (1000 domains, d0000.bench.example ...), MAX_LOAD (0.7: the 1-minute load average must
# be below it before the first measurement), MAX_OTHER (0.15: cores other processes may use
# in the 2 s before each measurement), MAX_OTHER_RUN (0.2: cores used by other processes, and
# kernel work not charged to the server or bench/load, during a measurement; above it the
# measurement is repeated, at most 5 times), QUIET_WAIT (1800 s waiting at most in all),
# SERVERS (default "ceiling tlspolicyd-cache tlspolicyd-overrides mta-sts-daemon"),
# OUT (a directory to keep the raw runs in, OUT/results.tsv; by default they are only printed
# on stderr as they come).
#
# Every server answers every key with the same policy: socketmap
# "OK secure match=mx.bench.example servername=hostname", tcp_table "200 secure match=...".
# Each reply is checked: once byte for byte (a probe per server and protocol), then by
# bench/load during the run (every reply must be OK / 2xx, no errors) - a run that gets
# anything else fails the script. Measurements alternate between the servers (repeat r of
# every server, then repeat r + 1), and the table shows the median of the repeats.
# Needs mta-sts-daemon (apt-get install postfix-mta-sts-resolver), sqlite3 and python3; it
# installs nothing. It starts everything on 127.0.0.1 and stops exactly what it started (also
# on Ctrl-C).
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
duration=${DURATION:-5}
warmup=${WARMUP:-1}
repeats=${REPEATS:-3}
connections=${CONNECTIONS:-"8 64 256"}
nkeys=${KEYS:-1000}
max_load=${MAX_LOAD:-0.7}
max_other=${MAX_OTHER:-0.15}
max_other_run=${MAX_OTHER_RUN:-0.2}
quiet_wait=${QUIET_WAIT:-1800}
servers=${SERVERS:-"ceiling tlspolicyd-cache tlspolicyd-overrides mta-sts-daemon"}
policy="secure match=mx.bench.example servername=hostname"

for tool in "$build/tlspolicyd" "$build/tlspolicy" "$build/bench/load" "$build/bench/ceiling"; do
  [ -x "$tool" ] || { echo "compare.sh: $tool missing: build first (make)" >&2; exit 2; }
done
for tool in sqlite3 python3; do
  command -v "$tool" >/dev/null || { echo "compare.sh: needs $tool" >&2; exit 2; }
done
if [[ " $servers " == *" mta-sts-daemon "* ]] && ! command -v mta-sts-daemon >/dev/null; then
  echo "compare.sh: mta-sts-daemon missing: apt-get install postfix-mta-sts-resolver" \
       "(or SERVERS without mta-sts-daemon)" >&2
  exit 2
fi

dir=$(mktemp -d /tmp/tlspolicyd-compare.XXXXXX)
out=${OUT:-$dir}
mkdir -p "$out"
pids=()        # every process started here, stopped by PID
load_pid=""
cleanup() {
  trap - EXIT INT TERM
  set +e
  [ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null && wait "$load_pid" 2>/dev/null
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    # mta-sts-daemon takes a second or two to stop; never more than 10 s
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'echo "compare.sh: interrupted" >&2; exit 130' INT TERM

# Free loopback ports (bound and released by the kernel; taken again at once below).
mapfile -t ports < <(python3 - <<'PY'
import socket
socks = []
for _ in range(7):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
for s in socks:
    print(s.getsockname()[1])
PY
)
p_ceil_sm=${ports[0]} p_ceil_tt=${ports[1]}
p_cache_sm=${ports[2]} p_cache_tt=${ports[3]}
p_ovr_sm=${ports[4]} p_ovr_tt=${ports[5]}
p_sts=${ports[6]}

# Keys.
python3 -c "
for i in range($nkeys): print('d%04d.bench.example' % i)" >"$dir/keys"

wait_port() {  # PORT PID LOG
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { echo "compare.sh: server exited:" >&2; cat "$3" >&2; exit 1; }
    sleep 0.05
  done
  echo "compare.sh: nothing listens on 127.0.0.1:$1 after 10 s" >&2; cat "$3" >&2; exit 1
}

tlspolicyd_conf() {  # DIR SM_PORT TT_PORT
  cat <<CONF
[[listen]]
protocol = "socketmap"
address = "127.0.0.1:$2"
[[listen]]
protocol = "tcp_table"
address = "127.0.0.1:$3"
[dns]
resolvers = ["127.0.0.1:9"]   # nothing answers there: every answer must come from the cache
[cache]
path = "$1/cache.sqlite"
[control]
address = "off"
[log]
level = "warning"
[policy]
sts_level = "secure"
CONF
}

start_server() {  # NAME
  case $1 in
    ceiling)
      "$build/bench/ceiling" --protocol socketmap --listen "127.0.0.1:$p_ceil_sm" \
          --reply "$policy" >"$dir/ceiling-sm.log" 2>&1 &
      pids+=($!); wait_port "$p_ceil_sm" $! "$dir/ceiling-sm.log"
      "$build/bench/ceiling" --protocol tcp_table --listen "127.0.0.1:$p_ceil_tt" \
          --reply "$policy" >"$dir/ceiling-tt.log" 2>&1 &
      pids+=($!); wait_port "$p_ceil_tt" $! "$dir/ceiling-tt.log"
      ;;
    tlspolicyd-cache)
      # Rows as the MTA-STS engine writes them (policy in force stored with the answer),
      # fresh for a day; loaded into memory at start.
      mkdir -p "$dir/cache"
      tlspolicyd_conf "$dir/cache" "$p_cache_sm" "$p_cache_tt" >"$dir/cache/c.toml"
      "$build/tlspolicy" -c "$dir/cache/c.toml" prefetch --no-progress </dev/null >/dev/null
      local now; now=$(date +%s)
      sqlite3 "$dir/cache/cache.sqlite" >/dev/null <<SQL
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < $nkeys)
INSERT INTO entries(domain, outcome, policy, source, reason, fetched_at, expires_at, stale_until,
                    sts_decides, sts_id, sts_body, sts_max_age, sts_fetched_at, sts_expires_at,
                    details, hits, last_used, seq, writer)
SELECT printf('d%04d.bench.example', i), 'found', '$policy', 'mta-sts',
       'MTA-STS mode enforce, policy id 20260101T000000 (found)',
       $now, $now + 86400, $now + 86400 + 3600, 1, '20260101T000000',
       'version: STSv1' || char(10) || 'mode: enforce' || char(10) ||
       'mx: mx.bench.example' || char(10) || 'max_age: 604800' || char(10),
       604800, $now, $now + 604800, '{}', 0, $now, 1, 'bench'
FROM n;
UPDATE meta SET value = 1 WHERE key = 'seq';
SQL
      STATE_DIRECTORY="$dir/cache" "$build/tlspolicyd" -c "$dir/cache/c.toml" \
          >"$dir/cache/log" 2>&1 &
      pids+=($!); wait_port "$p_cache_sm" $! "$dir/cache/log"; wait_port "$p_cache_tt" $! "$dir/cache/log"
      ;;
    tlspolicyd-overrides)
      mkdir -p "$dir/ovr"
      { tlspolicyd_conf "$dir/ovr" "$p_ovr_sm" "$p_ovr_tt"
        echo "[overrides]"
        sed "s/.*/\"&\" = \"$policy\"/" "$dir/keys"; } >"$dir/ovr/c.toml"
      STATE_DIRECTORY="$dir/ovr" "$build/tlspolicyd" -c "$dir/ovr/c.toml" >"$dir/ovr/log" 2>&1 &
      pids+=($!); wait_port "$p_ovr_sm" $! "$dir/ovr/log"; wait_port "$p_ovr_tt" $! "$dir/ovr/log"
      ;;
    mta-sts-daemon)
      # Its SQLite backend (Debian's default config) with one row per key: ts = now and
      # cache_grace of a year, so no row is stale and no lookup is made (a stale row would
      # send it to DNS, which is not there: the reply would then be NOTFOUND, and fail).
      mkdir -p "$dir/sts"
      cat >"$dir/sts/mta-sts-daemon.yml" <<YML
host: 127.0.0.1
port: $p_sts
reuse_port: true          # false crashes 1.1.2 at start (UnboundLocalError: opts)
shutdown_timeout: 2
cache_grace: 31536000
proactive_policy_fetching:
  enabled: false
cache:
  type: sqlite
  options:
    filename: "$dir/sts/cache.db"
default_zone:
  strict_testing: false
  timeout: 4
YML
      local now; now=$(date +%s)
      sqlite3 "$dir/sts/cache.db" >/dev/null <<SQL
PRAGMA journal_mode=WAL;
CREATE TABLE proactive_fetch_ts (id integer primary key, last_fetch_ts integer);
CREATE TABLE sts_policy_cache (domain text, ts integer, pol_id text, pol_body text);
CREATE UNIQUE INDEX sts_policy_domain ON sts_policy_cache (domain);
CREATE INDEX sts_policy_domain_ts ON sts_policy_cache (domain, ts);
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < $nkeys)
INSERT INTO sts_policy_cache
SELECT printf('d%04d.bench.example', i), $now, '20260101T000000',
       '{"version": "STSv1", "mode": "enforce", "mx": ["mx.bench.example"], "max_age": 604800}'
FROM n;
SQL
      mta-sts-daemon -c "$dir/sts/mta-sts-daemon.yml" -v warn >"$dir/sts/log" 2>&1 &
      pids+=($!); wait_port "$p_sts" $! "$dir/sts/log"
      ;;
    *) echo "compare.sh: unknown server $1" >&2; exit 2 ;;
  esac
}

# server protocol -> port
port_of() {
  case "$1/$2" in
    ceiling/socketmap) echo "$p_ceil_sm" ;;
    ceiling/tcp_table) echo "$p_ceil_tt" ;;
    tlspolicyd-cache/socketmap) echo "$p_cache_sm" ;;
    tlspolicyd-cache/tcp_table) echo "$p_cache_tt" ;;
    tlspolicyd-overrides/socketmap) echo "$p_ovr_sm" ;;
    tlspolicyd-overrides/tcp_table) echo "$p_ovr_tt" ;;
    mta-sts-daemon/socketmap) echo "$p_sts" ;;
    *) echo "" ;;
  esac
}
# The PID whose CPU time counts as the server's.
pid_of() {
  local i=0 s
  for s in $servers; do
    if [ "$s" = "$1" ]; then
      if [ "$s" = ceiling ]; then
        [ "$2" = socketmap ] && echo "${pids[$i]}" || echo "${pids[$((i + 1))]}"
      else
        echo "${pids[$i]}"
      fi
      return
    fi
    [ "$s" = ceiling ] && i=$((i + 2)) || i=$((i + 1))
  done
}

# Byte-for-byte check of the replies to two keys on one connection (tcp_table: the policy's
# spaces may come %20-encoded or not; Postfix decodes both).
check_reply() {  # PROTOCOL PORT
  python3 - "$1" "$2" "$policy" <<'PY'
import socket, sys
proto, port, policy = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.create_connection(("127.0.0.1", port), timeout=10)
for key in ("d0000.bench.example", "d0001.bench.example"):
    if proto == "socketmap":
        q = ("postfix " + key).encode()
        s.sendall(b"%d:%s," % (len(q), q))
        want = ("OK " + policy).encode()
        want = b"%d:%s," % (len(want), want)
    else:
        s.sendall(("get " + key + "\n").encode())
        want = ("200 " + policy.replace(" ", "%20") + "\n").encode()
        want2 = ("200 " + policy + "\n").encode()
    got = b""
    while len(got) < len(want) and not got.endswith(b"\n" if proto != "socketmap" else b","):
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    ok = got == want or (proto != "socketmap" and got == want2)
    if not ok:
        print("unexpected reply to %s: %r (want %r)" % (key, got, want), file=sys.stderr)
        sys.exit(1)
PY
}

. "$(dirname "$0")/cpu.sh"  # hz, cpu_busy, proc_cpu, children_cpu

# Quiet machine: the 1-minute load average below MAX_LOAD before the first measurement (our
# own runs raise it afterwards), and before every measurement less than MAX_OTHER cores busy
# over 2 s while our servers are idle. Both waited for, at most QUIET_WAIT seconds in all.
waited=0
wait_quiet() {
  local first=$1
  while :; do
    local ok=1 why=""
    if [ "$first" = 1 ]; then
      local l1; l1=$(cut -d' ' -f1 /proc/loadavg)
      if awk -v l="$l1" -v m="$max_load" 'BEGIN { exit !(l >= m) }'; then ok=0; why="load average $l1"; fi
    fi
    if [ "$ok" = 1 ]; then
      local b0 b1; b0=$(cpu_busy); sleep 2; b1=$(cpu_busy)
      local busy; busy=$(awk -v a="$b0" -v b="$b1" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz / 2 }')
      if awk -v x="$busy" -v m="$max_other" 'BEGIN { exit !(x >= m) }'; then ok=0; why="$busy cores busy while idle"; fi
    fi
    [ "$ok" = 1 ] && return 0
    if [ "$waited" -ge "$quiet_wait" ]; then
      echo "compare.sh: the machine is not quiet ($why) after ${waited} s of waiting; giving up" >&2
      exit 3
    fi
    echo "compare.sh: waiting for a quiet machine ($why)" >&2
    sleep 10; waited=$((waited + 12))
  done
}

for s in $servers; do start_server "$s"; done
for s in $servers; do
  for proto in socketmap tcp_table; do
    port=$(port_of "$s" "$proto"); [ -n "$port" ] || continue
    check_reply "$proto" "$port" || { echo "compare.sh: $s $proto: wrong reply" >&2; exit 1; }
  done
done
echo "compare.sh: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //');" \
     "servers: $servers; ${duration} s after ${warmup} s warm-up, $repeats repeats, $nkeys keys" >&2

# One measurement: bench/load against SERVER's PORT; writes the row of results.tsv to
# $dir/row. Fails when bench/load fails or any reply is not the expected answer. Runs in this
# shell (not in $(...)), so that the trap knows $load_pid and `times` sees bench/load.
measure() {  # SERVER PROTOCOL CONNECTIONS REPEAT PORT SERVER_PID
  local b0 s0 l0 b1 s1 l1 rc=0 p
  for p in "${pids[@]}"; do
    kill -0 "$p" 2>/dev/null || { echo "compare.sh: a server (pid $p) has exited" >&2; exit 1; }
  done
  b0=$(cpu_busy); s0=$(proc_cpu "$6"); children_cpu; l0=$children_s
  "$build/bench/load" --protocol "$2" --connect "127.0.0.1:$5" --connections "$3" \
      --duration "$duration" --warmup "$warmup" --keys "$dir/keys" --json \
      >"$dir/run.json" 2>"$dir/run.err" &
  load_pid=$!
  wait "$load_pid" || rc=$?
  load_pid=""
  children_cpu; l1=$children_s; b1=$(cpu_busy); s1=$(proc_cpu "$6")
  if [ "$rc" != 0 ]; then
    echo "compare.sh: $1 $2 $3: bench/load failed:" >&2; cat "$dir/run.err" >&2; return 1
  fi
  python3 - "$dir/run.json" "$2" "$1" "$3" "$4" "$b0" "$b1" "$s0" "$s1" "$l0" "$l1" "$hz" \
      "$duration" "$warmup" >"$dir/row" <<'PY'
import json, sys
(path, proto, server, conns, rep, b0, b1, s0, s1, l0, l1, hz, dur, warm) = sys.argv[1:]
j = json.load(open(path))
want = "OK" if proto == "socketmap" else "2xx"
wrong = {k: v for k, v in j["answers"].items() if k != want and v}
if j["errors"] or wrong or j["answers"][want] != j["requests"] or j["requests"] == 0:
    print("compare.sh: %s %s %s: unexpected answers %s, errors %s %s" % (
        server, proto, conns, j["answers"], j["error_kinds"], j["error_examples"]), file=sys.stderr)
    sys.exit(1)
wall = float(dur) + float(warm)  # the CPU counters cover the warm-up too
hz = float(hz)
srv = (float(s1) - float(s0)) / hz / wall
load = (float(l1) - float(l0)) / wall
other = (float(b1) - float(b0)) / hz / wall - srv - load
lat = j["latency_us"]
print("\t".join([server, proto, conns, rep, "%.0f" % j["requests_per_s"], "%.1f" % lat["p50"],
                 "%.1f" % lat["p99"], "%.1f" % lat["p99_9"], "%.2f" % srv, "%.2f" % load,
                 "%.2f" % other]))
PY
}

results="$out/results.tsv"
printf 'server\tprotocol\tconnections\trepeat\treq_s\tp50_us\tp99_us\tp999_us\tserver_cores\tload_cores\tother_cores\n' >"$results"
failed=0
first=1
for r in $(seq "$repeats"); do
  for c in $connections; do
    for proto in socketmap tcp_table; do
      for s in $servers; do
        port=$(port_of "$s" "$proto"); [ -n "$port" ] || continue
        spid=$(pid_of "$s" "$proto")
        attempt=0
        while :; do
          attempt=$((attempt + 1))
          wait_quiet "$first"; first=0
          measure "$s" "$proto" "$c" "$r" "$port" "$spid" || { row=""; failed=1; break; }
          row=$(cat "$dir/row")
          other=$(cut -f11 <<<"$row")
          # Other processes (or kernel work charged to nobody) busy during the run: again.
          if awk -v x="$other" -v m="$max_other_run" 'BEGIN { exit !(x > m) }' &&
             [ "$attempt" -lt 5 ]; then
            echo "compare.sh: $s $proto $c: other processes used $other cores; measuring again" >&2
            continue
          fi
          break
        done
        [ -n "$row" ] || continue
        printf '%s\n' "$row" >>"$results"
        printf '%s\n' "$row" | awk -F'\t' '{printf "run %s: %-21s %-9s %4s conns %8s req/s p50 %7s us p99 %8s us; cores: server %s load %s other %s\n", $4, $1, $2, $3, $5, $6, $7, $9, $10, $11}' >&2
      done
    done
  done
done

python3 - "$results" "$connections" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
conns = sys.argv[2].split()
order = ["ceiling", "tlspolicyd-cache", "tlspolicyd-overrides", "mta-sts-daemon"]
med = {}
for r in rows:
    med.setdefault((r["server"], r["protocol"], r["connections"]), []).append(r)
def m(rs, k):
    return statistics.median(float(r[k]) for r in rs)
print("| server | protocol | connections | req/s | p50 | p99 | ratio to ceiling (req/s) | p99 / ceiling p99 | server cores | other cores (max) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for proto in ("socketmap", "tcp_table"):
    for c in conns:
        ceil = med.get(("ceiling", proto, c))
        for s in sorted({k[0] for k in med}, key=lambda s: order.index(s) if s in order else 99):
            rs = med.get((s, proto, c))
            if not rs:
                continue
            rps, p50, p99 = m(rs, "req_s"), m(rs, "p50_us"), m(rs, "p99_us")
            ratio = "%.2f" % (rps / m(ceil, "req_s")) if ceil else "-"
            pr = "%.2f" % (p99 / m(ceil, "p99_us")) if ceil else "-"
            print("| %s | %s | %s | %s | %.2f ms | %.2f ms | %s | %s | %.2f | %.2f |" % (
                s, proto, c, f"{rps:,.0f}", p50 / 1000, p99 / 1000, ratio, pr,
                m(rs, "server_cores"), max(float(r["other_cores"]) for r in rs)))
print("\n(medians of %d repeats)" % max(len(v) for v in med.values()))
PY
exit "$failed"
