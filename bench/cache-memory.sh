#!/usr/bin/env bash
# Memory and start-up time of tlspolicyd with a large cache file (issue 9: 1,000,000 domains,
# targets < 200 MiB resident and < 2 s to start).
#
#   bench/cache-memory.sh [BUILD_DIR] [ROWS]      (defaults: build, 1000000)
#
# Builds a synthetic cache file with sqlite3 (a realistic mix: 40% dane-only, 50% not found,
# 10% MTA-STS with a stored policy; domains like d0000123.example.com, reasons as the engines
# write them), starts the daemon on it with cache.max_entries = ROWS and DNS pointed at an
# unused loopback port (nothing is looked up), and prints the time from exec to the "started"
# log line, the resident memory once started (VmRSS) and its peak (VmHWM).
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
rows=${2:-1000000}
dir=$(mktemp -d /tmp/tlspolicyd-mem.XXXXXX)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT

cat >"$dir/c.toml" <<CONF
[[listen]]
protocol = "tcp_table"
address = "127.0.0.1:0"
[dns]
resolvers = ["127.0.0.1:9"]
[cache]
path = "$dir/cache.sqlite"
max_entries = $rows
[control]
address = "off"
CONF
"$build/tlspolicy" -c "$dir/c.toml" prefetch --no-progress </dev/null >/dev/null  # the schema
now=$(date +%s)
t0=$(date +%s.%N)
sqlite3 "$dir/cache.sqlite" <<SQL
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < $rows)
INSERT INTO entries(domain, outcome, policy, source, reason, fetched_at, expires_at, stale_until,
                    sts_decides, sts_id, sts_body, sts_max_age, sts_fetched_at, sts_expires_at,
                    details, hits, last_used, seq, writer)
SELECT printf('d%07d.example.com', i),
       CASE WHEN i % 10 < 4 OR i % 10 = 9 THEN 'found' ELSE 'not-found' END,
       CASE WHEN i % 10 < 4 THEN 'dane-only'
            WHEN i % 10 = 9 THEN printf('verify match=mx.d%07d.example.com servername=hostname', i)
            ELSE NULL END,
       CASE WHEN i % 10 < 4 THEN 'dane' WHEN i % 10 = 9 THEN 'mta-sts' ELSE 'none' END,
       CASE WHEN i % 10 < 4 THEN 'secure MX set, usable TLSA on all 2 MX host(s)'
            WHEN i % 10 = 9 THEN 'MTA-STS mode enforce, policy id 20261101T000000 (found)'
            ELSE 'no DANE (insecure MX set and no secure TLSA RRset); no MTA-STS policy: no usable _mta-sts record: no v=STSv1 record among 0 TXT records' END,
       $now, $now + 86400, $now + 86400 + 3600,
       i % 10 = 9,
       CASE WHEN i % 10 = 9 THEN '20261101T000000' END,
       CASE WHEN i % 10 = 9 THEN printf('version: STSv1%smode: enforce%smx: mx.d%07d.example.com%smax_age: 604800%s',
                                        char(10), char(10), i, char(10), char(10)) END,
       CASE WHEN i % 10 = 9 THEN 604800 END,
       CASE WHEN i % 10 = 9 THEN $now END,
       CASE WHEN i % 10 = 9 THEN $now + 604800 END,
       '{}', i % 7, $now - (i % 3600), 1, 'bench'
FROM n;
UPDATE meta SET value = 1 WHERE key = 'seq';  -- as a real write would: the rows are not news
SQL
t1=$(date +%s.%N)
echo "synthetic file: $rows rows, $(du -m "$dir/cache.sqlite" | cut -f1) MB, built in $(echo "$t1 - $t0" | bc) s"

start=$(date +%s.%N)
STATE_DIRECTORY="$dir" "$build/tlspolicyd" -c "$dir/c.toml" 2>"$dir/log" &
pid=$!
until grep -q " started " "$dir/log"; do
  kill -0 "$pid" 2>/dev/null || { cat "$dir/log"; exit 1; }
  sleep 0.05
done
ready=$(date +%s.%N)
grep -o "[0-9]* answer(s) loaded" "$dir/log"
echo "start: $(echo "$ready - $start" | bc) s (exec to the started line, 50 ms polling)"
sleep 2  # settle: the first sync and hit-flush timers have run
echo "resident: $(awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' /proc/$pid/status), peak: $(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' /proc/$pid/status)"
if [ -n "${KEEP:-}" ]; then cp "$dir/c.toml" "$dir/cache.sqlite" "$KEEP/"; sed -i "s|$dir|$KEEP|" "$KEEP/c.toml"; fi
