#!/usr/bin/env bash
# One short libFuzzer run, the test behind `meson test --suite fuzz` (docs/fuzzing.md).
# Usage: run-fuzz.sh NAME BINARY CORPUS_DIR ARTIFACT_DIR [DICT]
# The target replays the checked-in CORPUS_DIR (read only; reproducers listed in
# fuzz/pending-crashes.txt are left out) and then fuzzes for FUZZ_SECONDS (default 4); new
# inputs go to a temporary directory that is removed afterwards. A crash's input is kept in
# ARTIFACT_DIR and its stack printed. The last line is "NAME: 1 passed, 0 failed" (or
# "0 passed, 1 failed"), the form scripts/run-tests.sh counts.
set -uo pipefail
name=$1 bin=$2 corpus=$3 artifacts=$4 dict=${5:-}
here=$(cd "$(dirname "$0")" && pwd)
seconds=${FUZZ_SECONDS:-4}

work=$(mktemp -d "${TMPDIR:-/tmp}/tlspolicyd-$name.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/new" "$artifacts"

# Reproducers whose fix is still pending stay in the corpus directory but out of the run.
seeds=$corpus
skip=()
if [ -f "$here/pending-crashes.txt" ]; then
  while read -r path _; do
    case $path in '' | '#'*) continue ;; esac
    [ "$(dirname "$path")" = "corpus/$(basename "$corpus")" ] && skip+=("$(basename "$path")")
  done <"$here/pending-crashes.txt"
fi
if [ ${#skip[@]} -gt 0 ]; then
  seeds=$work/seeds
  mkdir "$seeds"
  for f in "$corpus"/*; do
    base=$(basename "$f")
    for s in "${skip[@]}"; do [ "$base" = "$s" ] && continue 2; done
    cp "$f" "$seeds/"
  done
fi

# UBSan stops at the first finding (the targets are also built with
# -fno-sanitize-recover=undefined) and prints its stack.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
# ASan's default 256 MB quarantine alone takes some targets near -rss_limit_mb=512 within
# seconds (fuzz-sts-txt: 489 MB after 10 s); 64 MB still catches use-after-free.
export ASAN_OPTIONS=${ASAN_OPTIONS:-quarantine_size_mb=64}

args=(-max_total_time="$seconds" -rss_limit_mb=512 -timeout=5 -print_final_stats=1
  -artifact_prefix="$artifacts/")
[ -n "$dict" ] && args+=(-dict="$dict")
log=$work/log
"$bin" "${args[@]}" "$work/new" "$seeds" >"$log" 2>&1
rc=$?

seeds_n=$(find "$seeds" -maxdepth 1 -type f | wc -l)
new_n=$(find "$work/new" -maxdepth 1 -type f | wc -l)
last=$(grep -E '^#[0-9]+[[:space:]]' "$log" | tail -n 1)
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log")
cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
echo "$name: ${runs:-?} runs (${rate:-?}/s), cov ${cov:-?}, ft ${ft:-?}," \
  "corpus $seeds_n seeds + $new_n new, peak rss ${rss:-?} MB"

if [ $rc -eq 0 ] && grep -q '^Done [0-9]* runs' "$log"; then
  echo "$name: 1 passed, 0 failed"
  exit 0
fi
echo "== $name failed (exit $rc); the end of libFuzzer's output:" >&2
tail -n 120 "$log" >&2
crash=$(sed -n "s/.*Test unit written to \(.*\)$/\1/p" "$log" | tail -n 1)
if [ -n "$crash" ]; then
  echo "== reproduce: $bin $crash" >&2
  echo "== input (hex): $(od -An -tx1 -v "$crash" | tr -d ' \n' | head -c 2000)" >&2
fi
echo "$name: 0 passed, 1 failed"
exit 1
