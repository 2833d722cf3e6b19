#!/usr/bin/env bash
# Runs the meson test suites of the given build directories around one hermetic test world
# (tests/world: DNS, HTTPS and SMTP servers on loopback, started first, stopped last even on
# failure or Ctrl-C; its directory is exported as WORLD) and prints one summary line,
# "N passed, N failed", counted over doctest test cases and the checks of script tests
# (which print "name: N passed, N failed"). The world check runs with the first build only.
# With --fuzz DIR, the suite "fuzz" of that clang build dir (-Dfuzzing=true, docs/fuzzing.md)
# runs last, and only that suite: each libFuzzer target for a few seconds; its fuzzers must be
# built (ninja -C DIR fuzzers), nothing else there is.
# Usage: run-tests.sh BUILD_DIR... [--fuzz FUZZ_BUILD_DIR]
# Exit status: 0 only if all passed and nothing of the world is left running.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dirs=()
fuzz_dir=""
while [ $# -gt 0 ]; do
  case $1 in
    --fuzz) fuzz_dir=${2:?--fuzz needs a build dir}; shift 2 ;;
    *) dirs+=("$1"); shift ;;
  esac
done
passed=0
failed=0
status=0

WORLD=$(mktemp -d /tmp/tlspolicyd-world.XXXXXX)
export WORLD
# The default [cache] path follows STATE_DIRECTORY: keep the tests' `tlspolicy` runs away
# from /var/lib/tlspolicyd (each test daemon gets its own directory from the harness).
mkdir -p "$WORLD/state"
export STATE_DIRECTORY="$WORLD/state"
world_pids=""
stop_world() {
  "$root/tests/world/stop-world.sh" "$WORLD"
  if [ "${KEEP_WORLD:-0}" = 1 ]; then echo "world kept in $WORLD"; else rm -rf "$WORLD"; fi
}
trap stop_world EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

count() {  # count LOGFILE: add its doctest / script summaries to the totals
  local p f
  while read -r p f; do
    passed=$((passed + p))
    failed=$((failed + f))
  done < <(sed -n \
    -e 's/.*\[doctest\] test cases: *[0-9]* *| *\([0-9]*\) passed *| *\([0-9]*\) failed.*/\1 \2/p' \
    -e 's/^[a-z-]*: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$1")
}

echo "== test world in $WORLD"
if /usr/bin/python3 "$root/tests/world/world.py" start "$WORLD" >/dev/null; then
  world_pids=$(awk '{print $1}' "$WORLD/pids")
else
  echo "test world failed to start"
  status=1
  failed=$((failed + 1))
fi

first=1
for dir in "${dirs[@]}"; do
  [ $status -eq 0 ] || [ -n "$world_pids" ] || break
  echo "== tests in $dir"
  args=(--print-errorlogs)
  [ $first -eq 1 ] || args+=(--no-suite world)
  first=0
  if ! meson test -C "$dir" "${args[@]}"; then status=1; fi
  count "$dir/meson-logs/testlog.txt"
done

if [ -n "$fuzz_dir" ]; then
  echo "== fuzz targets in $fuzz_dir"
  if ! meson test -C "$fuzz_dir" --suite fuzz --no-rebuild --print-errorlogs; then status=1; fi
  count "$fuzz_dir/meson-logs/testlog.txt"
fi

if [ -n "$world_pids" ]; then
  "$root/tests/world/stop-world.sh" "$WORLD"
  out=$("$root/tests/world/teardown-check.sh" "$WORLD" $world_pids) || status=1
  echo "$out"
  tmp=$(mktemp); printf '%s\n' "$out" > "$tmp"; count "$tmp"; rm -f "$tmp"
fi
[ $status -ne 0 ] && [ $failed -eq 0 ] && failed=1  # a crash before doctest's summary
echo "tests: $passed passed, $failed failed"
exit $status
