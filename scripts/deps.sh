#!/usr/bin/env bash
# Install the Debian packages tlspolicyd needs to build, run and test.
# Idempotent: only packages that are missing are installed; daemons that
# packages would start (postfix, nsd, unbound, nginx) are kept from starting.
set -euo pipefail

# Build and run time libraries (the full set, so later work does not churn the build).
BUILD_PKGS=(
  build-essential pkg-config meson ninja-build clang clang-format
  libevent-dev libgnutls28-dev libgetdns-dev libsqlite3-dev libtomlplusplus-dev
  doctest-dev libidn2-dev libsystemd-dev libcurl4-gnutls-dev dns-root-data
  # libFuzzer targets (docs/fuzzing.md): clang-14 links libclang_rt.fuzzer, .asan and .ubsan
  # from libclang-rt-14-dev (libfuzzer-14-dev's standalone libFuzzer.a is not used);
  # llvm-14 brings llvm-symbolizer for readable crash stacks.
  clang-14 libclang-rt-14-dev llvm-14
)
# Test clients and the hermetic test world.
TEST_PKGS=(
  postfix getdns-utils sqlite3 nsd unbound bind9-utils nginx openssl gnutls-bin
  python3-aiosmtpd iproute2 procps adduser
  # runtime libraries of exim4-daemon-light, which is unpacked, not installed (see below)
  libdb5.3 libgnutls-dane0 libidn12 libpcre2-8-0 libnsl2 libcrypt1
)

want=("${BUILD_PKGS[@]}")
[ "${1:-}" = "--build-only" ] || want+=("${TEST_PKGS[@]}")

missing=()
for p in "${want[@]}"; do
  st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$st" = "installed" ] || missing+=("$p")
done

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  # Keep package scripts from starting services on public ports.
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  trap '[ $made_policy = 1 ] && $sudo rm -f /usr/sbin/policy-rc.d' EXIT
  echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
  export DEBIAN_FRONTEND=noninteractive
  if ! $sudo apt-get install -y --no-install-recommends "${missing[@]}"; then
    $sudo apt-get update
    $sudo apt-get install -y --no-install-recommends "${missing[@]}"
  fi
fi

# Exim conflicts with Postfix as a Debian package (both are the system MTA), but
# the tests need both as clients. Exim's binary is unpacked from its .deb into a
# private directory and run with its own config; it is never installed or started.
if [ "${1:-}" != "--build-only" ]; then
  exim_dir=/var/cache/tlspolicyd-test/exim
  if [ ! -x "$exim_dir/usr/sbin/exim4" ]; then
    echo "deps: unpacking exim4-daemon-light into $exim_dir"
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download exim4-daemon-light >/dev/null 2>&1 ||
      { $sudo apt-get update >/dev/null && apt-get download exim4-daemon-light; })
    $sudo mkdir -p "$exim_dir"
    $sudo dpkg-deb -x "$tmp"/exim4-daemon-light_*.deb "$exim_dir"
    rm -rf "$tmp"
  fi
  # The binary looks up its compiled-in user at start, as the package's postinst would create it.
  if ! getent passwd Debian-exim >/dev/null; then
    $sudo adduser --system --group --no-create-home --home /nonexistent --quiet \
      --allow-bad-names Debian-exim
  fi
  # The differential MTA-STS test's independent implementation (npm package mailauth, pinned by
  # tests/diff/package-lock.json), installed outside the tree with the machine's Node.js.
  "$(cd "$(dirname "$0")/.." && pwd)/tests/diff/install-mailauth.sh"
fi
