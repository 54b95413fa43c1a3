#!/usr/bin/env bash
# build.sh: configure and build ctxd with CMake.
#   scripts/build.sh [--sanitize] [--release] [--werror] [--tests] [--dir DIR]
# Builds only the ctxd binary unless --tests asks for the test programs too.
# Prints the path of the built binary on the last line.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=build
type=RelWithDebInfo
opts=()
target=(--target ctxd)
while [ $# -gt 0 ]; do
  case "$1" in
    --sanitize) opts+=(-DCTXD_SANITIZE=ON); dir=build-asan ;;
    --release) type=Release ;;
    --werror) opts+=(-DCTXD_WERROR=ON) ;;
    --tests) target=() ;;
    --dir) dir="$2"; shift ;;
    *) echo "usage: $0 [--sanitize] [--release] [--werror] [--tests] [--dir DIR]" >&2; exit 2 ;;
  esac
  shift
done

cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$type" "${opts[@]}" >/dev/null
cmake --build "$dir" -j"$(nproc)" "${target[@]}" >&2
echo "$dir/ctxd"
