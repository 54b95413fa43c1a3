#!/usr/bin/env bash
# deps.sh: install the Debian packages ctxd needs that are missing.
#   scripts/deps.sh build    compilers and -dev libraries (default)
#   scripts/deps.sh runtime  only what the ctxd binary and redis need to run
#   scripts/deps.sh test     build + what the test suite uses
# The Dockerfile runs this same script, so the image and the tests agree.
set -euo pipefail

BUILD_PKGS="build-essential cmake pkg-config libhiredis-dev libjson-c-dev libcurl4-openssl-dev libssl-dev"
RUNTIME_PKGS="libhiredis0.14 libjson-c5 libcurl4 libssl3 ca-certificates"
SERVER_PKGS="redis-server redis-tools curl"
TEST_PKGS="python3 python3-requests python3-yaml python3-jsonschema docker-compose haproxy procps iproute2 openssl"

case "${1:-build}" in
  build) want="$BUILD_PKGS $SERVER_PKGS" ;;
  runtime) want="$RUNTIME_PKGS" ;;
  test) want="$BUILD_PKGS $SERVER_PKGS $TEST_PKGS" ;;
  *) echo "usage: $0 [build|runtime|test]" >&2; exit 2 ;;
esac

missing=()
for p in $want; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
# The SDK tests need npm (Debian's, or the one nodesource's nodejs carries).
if [ "${1:-build}" = test ] && ! command -v npm >/dev/null; then missing+=(nodejs npm); fi

install_missing() {
  [ ${#missing[@]} -eq 0 ] && return 0
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "deps.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    SUDO="sudo"
  fi
  echo "deps.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
install_missing

# The official SDKs (and the Node.js 22 openai 7 asks for), exactly as
# tests/node/package-lock.json pins them; again only when the lockfile changed.
if [ "${1:-build}" = test ]; then
  node_dir="$(dirname "$0")/../tests/node"
  stamp="$node_dir/node_modules/.ctxd-lock"
  if ! cmp -s "$node_dir/package-lock.json" "$stamp"; then
    echo "deps.sh: npm ci in tests/node" >&2
    npm ci --prefix "$node_dir" --no-audit --no-fund --loglevel=error >&2
    cp "$node_dir/package-lock.json" "$stamp"
  fi
fi
