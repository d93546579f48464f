#!/usr/bin/env bash
# npm run test:asan: the addon built with AddressSanitizer and UBSan (any
# undefined behaviour aborts) into build-asan/, then the host tests that
# drive the native code run against it. Node itself is not instrumented, so
# gcc's ASan runtime is preloaded; leak detection is off (Node's own
# allocations at exit are not ours to judge; fd leaks are counted by the
# tests themselves).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# CMakeLists.txt's LIVEUPDATE_SANITIZE option adds the flags.
npx cmake-js compile --out build-asan --CDLIVEUPDATE_SANITIZE=ON > build-asan.log 2>&1 || { tail -40 build-asan.log; exit 1; }

export LIVEUPDATE_ADDON="$PWD/build-asan/Release/liveupdate.node"
export LD_PRELOAD="$(g++ -print-file-name=libasan.so)"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export LIVEUPDATE_SKIP_KERNEL_TESTS=1
# The sanitized addon really is the one loaded: it carries ASan's symbols.
node -e '
  const m = require(process.env.LIVEUPDATE_ADDON);
  if (!require("fs").readFileSync(process.env.LIVEUPDATE_ADDON).includes("__asan_report")) { console.error("build-asan is not instrumented"); process.exit(1); }
  console.log("ASan+UBSan build loaded: " + Object.keys(m).length + " exports")'
npx vitest run --project host --testTimeout 30000 test/api.test.ts test/errors.test.ts test/fdpass.test.ts test/fdpass-hostile.test.ts test/systemd.test.ts test/hardening.test.ts test/fuzz.test.ts test/agent-client.test.ts test/agent-fuzz.test.ts "$@"
