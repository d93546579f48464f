#!/usr/bin/env bash
# npm run prebuild: the addon prebuilt for linux-x64 and linux-arm64 (glibc)
# into prebuilds/, where node-gyp-build finds it at install and at load, so
# users need no compiler. The other architecture is cross-compiled with
# Debian's toolchain (g++-aarch64-linux-gnu on x64, g++-x86-64-linux-gnu on
# arm64). The host's own build goes last: node-gyp writes each one to
# build/Release, which is what the repository's tests load.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

triple() {
  case $1 in
    x64) echo x86_64-linux-gnu ;;
    arm64) echo aarch64-linux-gnu ;;
    *) echo "prebuild: no toolchain known for $1" >&2; exit 1 ;;
  esac
}

host=$(node -p process.arch)
for arch in x64 arm64; do
  [[ $arch == "$host" ]] && continue
  t=$(triple "$arch")
  command -v "$t-g++" >/dev/null || { echo "prebuild: $t-g++ is missing: apt-get install g++-${t//_/-}" >&2; exit 1; }
  CC="$t-gcc" CXX="$t-g++" npx prebuildify --napi --strip --tag-libc --arch "$arch" --strip-bin "$t-strip"
done
npx prebuildify --napi --strip --tag-libc --arch "$host"
ls -l prebuilds/*/
