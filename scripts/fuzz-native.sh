#!/usr/bin/env bash
# npm run fuzz:native [-- SECONDS [libFuzzer flags...]]: the coverage-guided
# fuzzer over the fd-passing receive path (fuzz/fdpass_receive_fuzzer.cc),
# built with clang, libFuzzer, ASan and UBSan into build-fuzz/. Starts from
# the seed corpus in fuzz/corpus/ (read only) and keeps what it finds in
# build-fuzz/corpus/. A crash, a leaked fd or a broken promise of FdReceiver
# aborts, and libFuzzer writes the input to build-fuzz/crash-*.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=${1:-60}
shift || true
mkdir -p build-fuzz/corpus
clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -Iinclude fuzz/fdpass_receive_fuzzer.cc native/fdpass.cc -o build-fuzz/fdpass_receive_fuzzer
cd build-fuzz
if ! ASAN_OPTIONS=detect_leaks=1 ./fdpass_receive_fuzzer -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
  "$@" corpus ../fuzz/corpus/fdpass_receive > fuzz.log 2>&1; then
  tail -60 fuzz.log
  exit 1
fi
grep -E '^(INFO: seed corpus|#[0-9]+ +DONE|Done|stat::)' fuzz.log
