#!/usr/bin/env bash
# `make install` layout and the systemd units: installs the build into a temporary DESTDIR
# and checks that every file is where docs/operations.md says, that the installed example
# config is valid, and that `systemd-analyze verify` accepts every unit (with the installed
# man pages on MANPATH, so that each unit's Documentation= must resolve).
# Usage: check-install.sh BUILD_DIR   Prints "install: N passed, N failed".
set -uo pipefail
build=$(cd "$1" && pwd)
passed=0
failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }

dest=$(mktemp -d /tmp/tlspolicyd-install.XXXXXX)
trap 'rm -rf "$dest"' EXIT
if meson install -C "$build" --destdir "$dest" --no-rebuild --quiet >"$dest.log" 2>&1; then ok
else bad "meson install: $(cat "$dest.log")"; fi
rm -f "$dest.log"
prefix=$(meson introspect "$build" --buildoptions |
  python3 -c 'import json,sys; print([o["value"] for o in json.load(sys.stdin) if o["name"]=="prefix"][0])')
root="$dest$prefix"

for f in sbin/tlspolicyd bin/tlspolicy etc/tlspolicyd/tlspolicyd.toml \
  lib/systemd/system/tlspolicyd.service lib/systemd/system/tlspolicyd.socket \
  lib/systemd/system/tlspolicy-prefetch.service lib/systemd/system/tlspolicy-prefetch.timer \
  share/man/man8/tlspolicyd.8 share/man/man1/tlspolicy.1 share/man/man5/tlspolicyd.toml.5 \
  share/doc/tlspolicyd/README.md share/doc/tlspolicyd/operations.md \
  share/doc/tlspolicyd/postfix.md share/doc/tlspolicyd/exim.md share/doc/tlspolicyd/probe.md \
  share/doc/tlspolicyd/tlspolicy-prefetch.cron; do
  if [ -s "$root/$f" ]; then ok; else bad "$prefix/$f not installed"; fi
done
for f in sbin/tlspolicyd bin/tlspolicy; do
  if [ -x "$root/$f" ]; then ok; else bad "$prefix/$f is not executable"; fi
done

# The example config is valid as installed.
if out=$("$root/bin/tlspolicy" -c "$root/etc/tlspolicyd/tlspolicyd.toml" check-config 2>&1); then ok
else bad "installed config: $out"; fi

# The units name the installed programs and config...
units="$root/lib/systemd/system"
for pair in "tlspolicyd.service:$prefix/sbin/tlspolicyd -c $prefix/etc/tlspolicyd/tlspolicyd.toml" \
  "tlspolicy-prefetch.service:$prefix/bin/tlspolicy -c $prefix/etc/tlspolicyd/tlspolicyd.toml prefetch"; do
  unit=${pair%%:*}
  want=${pair#*:}
  if grep -q "^ExecStart=$want" "$units/$unit"; then ok; else bad "$unit: ExecStart is not $want"; fi
done
# ... and systemd accepts them. verify needs the programs to exist on this machine: the check
# runs on copies that point at the build's binaries instead (nothing else changed).
check=$(mktemp -d /tmp/tlspolicyd-units.XXXXXX)
for f in "$units"/*; do
  sed -e "s|$prefix/sbin/tlspolicyd|$build/tlspolicyd|" -e "s|$prefix/bin/tlspolicy|$build/tlspolicy|" \
    "$f" >"$check/$(basename "$f")"
done
for f in "$check"/*; do
  if out=$(MANPATH="$root/share/man" SYSTEMD_LOG_COLOR=0 systemd-analyze verify "$f" 2>&1) &&
    [ -z "$out" ]; then ok; else bad "systemd-analyze verify $(basename "$f"): $out"; fi
done
# A unit with a mistake is caught (the check itself can fail).
sed 's/^NoDelay=/NoDelya=/' "$check/tlspolicyd.socket" >"$check/broken.socket"
if out=$(MANPATH="$root/share/man" systemd-analyze verify "$check/broken.socket" 2>&1) &&
  [ -z "$out" ]; then bad "a misspelt key passed systemd-analyze verify"; else ok; fi
rm -rf "$check"

echo "install: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
