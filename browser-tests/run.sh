#!/usr/bin/env bash
# Real headless-Chromium tests of the dashboard page (public/).
# Installs Debian's chromium if missing, installs playwright-core (never a
# browser download), builds the release server and runs test.mjs against it.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"

if [ ! -x /usr/bin/chromium ]; then
  echo "# installing Debian chromium"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y chromium
fi

echo "# npm ci (browser-tests)"
(cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error)

echo "# cargo build --release"
(cd "$REPO" && cargo build --release)

TARGET="${CARGO_TARGET_DIR:-target}"
case "$TARGET" in /*) ;; *) TARGET="$REPO/$TARGET" ;; esac
export TINYSSE_BIN="${TINYSSE_BIN:-$TARGET/release/tinysse}"

cd "$HERE"
exec node test.mjs
