#!/usr/bin/env bash
# Soak test (issue 9; docs/soak.md): tlspolicyd against the test world under C concurrent
# connections and N requests of mixed cached / uncached / malformed traffic, every reply
# checked, the daemon's resident memory sampled every second.
#
#   tests/soak/soak.sh [--requests N] [--connections C] [--warmup N] [--skip ROW,...] [--keep]
#                      [-- SOAK-ARGS...]
#
# Uses the world in $WORLD (scripts/run-tests.sh starts one); without it, starts a private world
# and stops it afterwards. Starts tlspolicyd ($TLSPOLICYD, else build/tlspolicyd) with the world's
# tlspolicyd.toml plus two listeners on kernel-chosen ports, a private cache file with
# max_entries = 500 ($SOAK_MAX_ENTRIES; the uncached names fill it during the warm-up, so the
# measured part runs with evictions), max_connections = C + 100 and metrics on a kernel-chosen
# port; runs the driver ($SOAK, else build/tests/soak); prints the daemon's metrics; stops the
# daemon with SIGTERM (exit 0 wanted) and checks its log for errors and sanitizer reports.
# Sizes: --requests, else $SOAK_REQUESTS, else 200000 (100000 in a sanitizer build, where
# meson passes SOAK_SANITIZE); --connections, else $SOAK_CONNECTIONS, else 1000. Memory growth
# is judged only without sanitizers (ASan's quarantine grows by design; LeakSanitizer checks
# the exit instead). --keep (or KEEP_SOAK=1) keeps the work directory (config, log, RSS samples).
# Prints "soak: N passed, M failed" last (counted by scripts/run-tests.sh).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=${SOURCE_ROOT:-$(cd "$here/../.." && pwd)}
PY=/usr/bin/python3
daemon_bin=${TLSPOLICYD:-$root/build/tlspolicyd}
cli_bin=${TLSPOLICY:-$root/build/tlspolicy}
soak_bin=${SOAK:-$root/build/tests/soak}
sanitized=${SOAK_SANITIZE:-none}
[ -z "$sanitized" ] && sanitized=none

requests=""
connections=${SOAK_CONNECTIONS:-1000}
warmup=""
skip=${SOAK_SKIP:-}
keep=${KEEP_SOAK:-0}
extra=()
while [ $# -gt 0 ]; do
  case $1 in
    --requests) requests=${2:?--requests needs a number}; shift 2 ;;
    --connections) connections=${2:?--connections needs a number}; shift 2 ;;
    --warmup) warmup=${2:?--warmup needs a number}; shift 2 ;;
    --skip) skip=${2:?--skip needs row names}; shift 2 ;;
    --keep) keep=1; shift ;;
    --) shift; extra=("$@"); break ;;
    *) echo "usage: $0 [--requests N] [--connections C] [--warmup N] [--skip ROW,...] [--keep]" \
            "[-- SOAK-ARGS...]" >&2
       exit 2 ;;
  esac
done
if [ -z "$requests" ]; then
  if [ -n "${SOAK_REQUESTS:-}" ]; then requests=$SOAK_REQUESTS
  elif [ "$sanitized" != none ]; then requests=100000
  else requests=200000; fi
fi

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
finish() { echo "soak: $passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit $?; }

for f in "$daemon_bin" "$cli_bin" "$soak_bin"; do
  [ -x "$f" ] || { echo "not built: $f"; bad "binaries"; finish; }
done

work=$(mktemp -d /tmp/tlspolicyd-soak.XXXXXX)
chmod 755 "$work"
pid=""
private_world=""
world_pids=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  fi
  if [ -n "$private_world" ]; then
    "$root/tests/world/stop-world.sh" "$private_world"
  fi
  if [ "$keep" = 1 ]; then echo "soak: work directory kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the world ---------------------------------------------------------------------------------
if [ -n "${WORLD:-}" ] && [ -s "$WORLD/world.env" ]; then
  world=$WORLD
else
  private_world="$work/world"
  mkdir -p "$private_world"
  echo "soak: starting a private test world in $private_world"
  if ! "$PY" "$root/tests/world/world.py" start "$private_world" >/dev/null; then
    bad "private test world did not start"; finish
  fi
  world_pids=$(awk '{print $1}' "$private_world/pids")
  world=$private_world
fi

# ---- the table: every scenario row whose answer is stable between queries ----------------------
# Skipped: rows with `config` overrides (the soak daemon runs the world's config), rows with
# `after` / `answer_after` (flipped by world.py), rows behind the never-answering DNS server
# (`timeout` checks: the answer is decided by a deadline) and the slow-drip policy host (decided
# by the fetch timeout). --skip (or SOAK_SKIP) names more rows to leave out.
scenarios=$(sed -n 's/^SCENARIOS=//p' "$world/world.env")
if ! "$PY" - "$scenarios" "$work/table.tsv" "$skip" <<'PY'
import sys, tomllib
rows = tomllib.load(open(sys.argv[1], "rb"))["scenario"]
asked = set(filter(None, sys.argv[3].split(",")))
unknown = asked - {r["name"] for r in rows}
if unknown:
    sys.exit("--skip: no such row: %s" % ", ".join(sorted(unknown)))
out, skipped = {}, []
for r in rows:
    why = None
    if r["name"] in asked: why = "--skip"
    elif "config" in r: why = "config"
    elif "after" in r or "answer_after" in r: why = "flip"
    elif any(" timeout" in c for c in r.get("dns", [])): why = "dns timeout"
    elif r.get("sts", {}).get("behaviour") == "slow-body": why = "fetch timeout"
    if why:
        skipped.append("%s (%s)" % (r["name"], why))
        continue
    for key in dict.fromkeys([r.get("key", r["domain"]), r["domain"]]):
        if "\t" in key or "\n" in key:
            sys.exit("key with TAB or newline: %r" % key)
        if out.get(key, r["answer"]) != r["answer"]:
            sys.exit("%s: two answers: %s, %s" % (key, out[key], r["answer"]))
        out[key] = r["answer"]
with open(sys.argv[2], "w") as f:
    f.write("# key<TAB>answer, from %s\n" % sys.argv[1])
    for k, a in out.items():
        f.write("%s\t%s\n" % (k, a))
kinds = {}
for a in out.values():
    k = a.split()[0]
    kinds[k] = kinds.get(k, 0) + 1
print("soak: table of %d keys (%s) from %d rows; skipped %d: %s" % (
    len(out), ", ".join("%s %d" % kv for kv in sorted(kinds.items())), len(rows),
    len(skipped), ", ".join(skipped)))
PY
then
  bad "table from $scenarios"; finish
fi

# ---- the daemon's configuration ------------------------------------------------------------------
# cache.max_entries is small so that the uncached names fill the cache during the warm-up and
# the measured part runs with evictions; metrics are read at the end.
max_entries=${SOAK_MAX_ENTRIES:-500}
if grep -qE '^\[(server|log|cache|control|metrics)\]|^\[\[listen\]\]' "$world/tlspolicyd.toml"; then
  bad "$world/tlspolicyd.toml already has a section the soak sets"; finish
fi
{
  cat "$world/tlspolicyd.toml"
  cat <<CONF

# ---- added by tests/soak/soak.sh ----
[[listen]]
protocol = "socketmap"
address = "127.0.0.1:0"
[[listen]]
protocol = "tcp_table"
address = "127.0.0.1:0"

[server]
max_connections = $((connections + 100))

[log]
level = "info"

[cache]
path = "$work/cache.sqlite"
max_entries = $max_entries

[control]
address = "off"

[metrics]
address = "127.0.0.1:0"
CONF
} >"$work/tlspolicyd.toml"
if ! "$cli_bin" -c "$work/tlspolicyd.toml" check-config; then
  bad "soak configuration invalid"; finish
fi

# The uncached names must be a known answer: secure NXDOMAIN, not found.
probe=$(STATE_DIRECTORY="$work" "$cli_bin" -c "$work/tlspolicyd.toml" query --fresh --json \
          "u0.check.nxdomain-soak.test" 2>&1)
case $probe in
  *'"outcome":"not-found"'*) ;;
  *) bad "the world does not answer NOTFOUND for u0.check.nxdomain-soak.test: $probe"; finish ;;
esac

# ---- start ----------------------------------------------------------------------------------------
ulimit -n "$(ulimit -Hn)" 2>/dev/null
STATE_DIRECTORY="$work" \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ASAN_OPTIONS=abort_on_error=0:detect_leaks=1 \
  "$daemon_bin" -c "$work/tlspolicyd.toml" >"$work/daemon.log" 2>&1 </dev/null &
pid=$!
started=""
for _ in $(seq 600); do  # up to 30 s (a sanitizer build starts slower)
  started=$(grep -m1 ' started (' "$work/daemon.log")
  [ -n "$started" ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done
sm=$(printf '%s\n' "$started" | sed -n 's/.*socketmap \([0-9.]*:[0-9]*\).*/\1/p')
tt=$(printf '%s\n' "$started" | sed -n 's/.*tcp_table \([0-9.]*:[0-9]*\).*/\1/p')
if [ -z "$sm" ] || [ -z "$tt" ]; then
  bad "tlspolicyd did not start (log below)"; cat "$work/daemon.log"; finish
fi
ok "tlspolicyd $pid started: socketmap $sm, tcp_table $tt ($sanitized sanitizer)"

# ---- soak ----------------------------------------------------------------------------------------
args=(--socketmap "$sm" --tcp-table "$tt" --table "$work/table.tsv" --pid "$pid"
      --connections "$connections" --requests "$requests" --rss-log "$work/rss.log")
[ -n "$warmup" ] && args+=(--warmup "$warmup")
[ "$sanitized" != none ] && args+=(--no-rss-check)
t0=$(date +%s.%N)
"$soak_bin" "${args[@]}" "${extra[@]}"
rc=$?
t1=$(date +%s.%N)
if [ $rc -eq 0 ]; then ok "soak driver: every reply right, daemon up"
else bad "soak driver (exit $rc)"; fi

# ---- the daemon's own counters -------------------------------------------------------------------
metrics_url=$(grep -m1 -o 'metrics on http://[0-9.:]*/metrics' "$work/daemon.log" | sed 's/^metrics on //')
if [ -n "$metrics_url" ] && kill -0 "$pid" 2>/dev/null; then
  echo "daemon metrics ($metrics_url):"
  "$PY" - "$metrics_url" <<'PY' || echo "  (not readable)"
import sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
for line in text.splitlines():
    if line.startswith("#"):
        continue
    name = line.split("{")[0].split(" ")[0]
    if name in ("tlspolicyd_cache_entries", "tlspolicyd_connections",
                "tlspolicyd_resolutions_in_flight") or (
            name in ("tlspolicyd_lookups_total", "tlspolicyd_cache_lookups_total",
                     "tlspolicyd_dns_errors_total", "tlspolicyd_https_errors_total",
                     "tlspolicyd_refreshes_total") and not line.endswith(" 0")):
        print("  " + line)
PY
fi

# ---- stop: SIGTERM, exit 0 ------------------------------------------------------------------------
if kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid"; wait "$pid" 2>/dev/null
    bad "tlspolicyd ignored SIGTERM for 30 s"
  else
    wait "$pid"; code=$?
    if [ $code -eq 0 ]; then ok "tlspolicyd exited 0 on SIGTERM"
    else bad "tlspolicyd exited $code on SIGTERM"; fi
  fi
else
  wait "$pid"; code=$?
  bad "tlspolicyd died during the soak (exit $code)"
fi
pid=""

# ---- the log ------------------------------------------------------------------------------------
# Expected warnings: connections closed for framing errors, "downgrade prevented" for the TEMP
# rows. Errors and sanitizer reports are never expected.
unexpected=$(grep -E ' error: |runtime error|AddressSanitizer|LeakSanitizer|ERROR: ' "$work/daemon.log" | head -20)
echo "daemon log: $(wc -l <"$work/daemon.log") lines; warnings by kind:"
grep ' warning: ' "$work/daemon.log" |
  sed -e 's/^[^ ]* warning: //' -e 's/[0-9][0-9]*/N/g' \
      -e 's/^closing [^ ]* (/closing PEER (/' -e 's/^u[^ :]*nxdomain-soak\.test/UNCACHED/' \
      -e 's/^[a-z0-9.-]*\.test: /DOMAIN: /' |
  cut -c1-120 | sort | uniq -c | sort -rn | head -12 | sed 's/^/  /'
if [ -z "$unexpected" ]; then ok "daemon log: no errors, no sanitizer reports"
else bad "daemon log has errors:"; printf '%s\n' "$unexpected"; fi

printf 'soak: the driver ran %.1f s (%s requests asked, %s connections)\n' \
  "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "$requests" "$connections"
if [ -n "$private_world" ]; then
  "$root/tests/world/stop-world.sh" "$private_world"
  if out=$("$root/tests/world/teardown-check.sh" "$private_world" $world_pids); then
    ok "private world stopped"
  else
    bad "private world left processes: $out"
  fi
  private_world=""
fi
finish
