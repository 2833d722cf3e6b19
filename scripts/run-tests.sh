#!/usr/bin/env bash
# Runs the meson test suites of the given build directories and prints one summary line,
# "N passed, N failed", counted over doctest test cases and the checks of script tests
# (which print "name: N passed, N failed"). Exit status: 0 only if all passed.
set -uo pipefail
passed=0
failed=0
status=0
for dir in "$@"; do
  echo "== tests in $dir"
  if ! meson test -C "$dir" --print-errorlogs; then status=1; fi
  log="$dir/meson-logs/testlog.txt"
  # doctest prints "[doctest] test cases: N | N passed | N failed | ..." per test binary.
  while read -r p f; do
    passed=$((passed + p))
    failed=$((failed + f))
  done < <(sed -n \
    -e 's/.*\[doctest\] test cases: *[0-9]* *| *\([0-9]*\) passed *| *\([0-9]*\) failed.*/\1 \2/p' \
    -e 's/^[a-z-]*: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$log")
done
[ $status -ne 0 ] && [ $failed -eq 0 ] && failed=1  # a crash before doctest's summary
echo "tests: $passed passed, $failed failed"
exit $status
