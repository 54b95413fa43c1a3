#!/usr/bin/env bash
# test.sh: install what is missing, build with warnings as errors under
# AddressSanitizer + UndefinedBehaviorSanitizer, and run every test (unit
# tests per module, end-to-end tests against a real redis-server and the real
# ctxd over HTTP). Extra arguments go to ctest (e.g. -R e2e_test_api).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh test
scripts/build.sh --sanitize --werror --tests --dir build-test >/dev/null

export ASAN_OPTIONS="abort_on_error=0:detect_leaks=1:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
cd build-test
rc=0
ctest --output-on-failure -j2 --timeout 600 "$@" || rc=$?
# A skip (a tool that is not installed) is never a pass: say which and why.
if grep -h "^SKIPPED" Testing/Temporary/LastTest.log 2>/dev/null; then
  echo "test.sh: the tests above were skipped, not passed" >&2
fi
exit $rc
