#!/usr/bin/env bash
# Installs mailauth, pinned by tests/diff/package-lock.json, for the MTA-STS differential
# test (tests/diff/compare.py). Test-only: it is never linked into or shipped with tlspolicyd.
#
#   tests/diff/install-mailauth.sh            # into /var/cache/tlspolicyd-test/mailauth
#   MAILAUTH_DIR=/some/dir tests/diff/install-mailauth.sh
#
# Idempotent: does nothing when the directory already holds an install made from the same
# package.json and package-lock.json. Uses sudo only to create the directory when its parent
# is not writable (the directory is then handed to the calling user; npm never runs as root).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${MAILAUTH_DIR:-/var/cache/tlspolicyd-test/mailauth}

for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "install-mailauth: $tool is missing (need Node >= 20 and npm)" >&2; exit 1; }
done

want=$(node -p "require(process.argv[1]).packages['node_modules/mailauth'].version" \
  "$here/package-lock.json")

installed() {
  [ -f "$dir/node_modules/mailauth/package.json" ] &&
    cmp -s "$here/package.json" "$dir/package.json" &&
    cmp -s "$here/package-lock.json" "$dir/.installed-lock.json" &&
    [ "$(node -p "require(process.argv[1]).version" "$dir/node_modules/mailauth/package.json")" = "$want" ]
}

if installed; then
  exit 0
fi

if [ ! -d "$dir" ] && ! mkdir -p "$dir" 2>/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo mkdir -p "$dir"
  $sudo chown "$(id -u):$(id -g)" "$dir"
fi
if [ ! -w "$dir" ]; then
  echo "install-mailauth: $dir is not writable by $(id -un)" >&2
  exit 1
fi

echo "install-mailauth: installing mailauth $want into $dir"
rm -f "$dir/.installed-lock.json"
cp "$here/package.json" "$here/package-lock.json" "$dir/"
# mailauth 7.1.0 declares node >= 22.19; lib/mta-sts.js runs on Node 20, and compare.py fails
# loudly if it ever stops loading, so an engine mismatch is only a warning here.
(cd "$dir" && npm ci --omit=dev --no-audit --no-fund --engine-strict=false --loglevel=error)
got=$(node -p "require(process.argv[1]).version" "$dir/node_modules/mailauth/package.json")
if [ "$got" != "$want" ]; then
  echo "install-mailauth: installed mailauth $got, wanted $want" >&2
  exit 1
fi
node -e "require(process.argv[1])" "$dir/node_modules/mailauth/lib/mta-sts.js"
cp "$here/package-lock.json" "$dir/.installed-lock.json"
echo "install-mailauth: mailauth $want ready"
