#!/usr/bin/env bash
# npm run test:arm64: the linux-arm64 prebuild, proven on an arm64 Node.
# Runs the host tests of the native layer (the API, errors, argument checks
# and fd passing: the ones that exercise the addon; the rest is JavaScript,
# the same on every architecture) with Debian's arm64
# node (scripts/debian-node.sh) under qemu-user, against
# prebuilds/linux-arm64 alone (run `npm run prebuild` first), in a copy of
# the repository whose npm dependencies are installed for arm64.
#
# The tests spawn node (process.execPath) themselves, so arm64 binaries must
# run when exec'd: qemu-aarch64 is registered with binfmt_misc inside a user
# namespace of its own (Linux 6.7+), which the rest of the machine never sees.
# Everything runs emulated, hence the long timeouts (the copy's explicit
# per-test timeouts are multiplied by ten).
#
# Left out: the tests that provoke the kernel's answer to a LUO ioctl on a
# wrong fd (ENOTTY, EBADF), and those of SO_PASSRIGHTS (socket option 83,
# Linux 6.16+). qemu-user answers ioctls it does not know with ENOSYS, and
# socket options it does not know with ENOPROTOOPT, instead of passing them
# to the kernel; the x86-64 run proves both on the kernel itself.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD

tests=(api errors validate fdpass)
not_under_qemu='errors provoked through the native layer|close waits for calls still running on the thread pool|SO_PASSRIGHTS'
prebuild=prebuilds/linux-arm64
ls "$prebuild"/*.node >/dev/null 2>&1 || { echo "test:arm64: no $prebuild/*.node: run npm run prebuild" >&2; exit 1; }
[[ -f dist/index.js ]] || { echo "test:arm64: no dist/: run npm run compile" >&2; exit 1; }
qemu=$(command -v qemu-aarch64 || command -v qemu-aarch64-static) || { echo "test:arm64: qemu-aarch64 is missing: apt-get install qemu-user" >&2; exit 1; }
tree=$(bash scripts/debian-node.sh arm64)

work=$(mktemp -d "${TMPDIR:-/tmp}/liveupdate-arm64-XXXXXX")
trap 'rm -rf "$work"' EXIT
# The repository as a clone would have it, its built JavaScript and the arm64 addon only.
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  [[ -e "$f" ]] && install -D -m "$(stat -c %a "$f")" "$f" "$work/$f"
done
cp -r dist "$work/dist"
mkdir -p "$work/prebuilds" && cp -r "$prebuild" "$work/prebuilds/"
(cd "$work" && npm ci --ignore-scripts --cpu=arm64 --os=linux --libc=glibc --prefer-offline --no-audit --no-fund >/dev/null)
# The library's tests only: the test bed's (conformance/test) need its own build and an x86-64 guest.
rm -rf "$work/conformance/test"
perl -pi -e 's/\}, ([0-9_]+)\);/}, 10 * $1);/' "$work"/test/*.test.ts

magic='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
echo "test:arm64: $("$qemu" --version | head -1); node $(QEMU_LD_PREFIX=$tree "$qemu" "$tree/usr/bin/node" -p 'process.version + " " + process.arch')" >&2
cd "$work"
QEMU_LD_PREFIX=$tree LIVEUPDATE_SKIP_KERNEL_TESTS=1 unshare --user --map-root-user --mount --fork bash -euc '
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  echo ":qemu-aarch64:M::$1:$2:$3:" > /proc/sys/fs/binfmt_misc/register
  shift 3
  exec "$@"
' _ "$magic" "$mask" "$qemu" "$tree/usr/bin/node" node_modules/vitest/vitest.mjs run --project host \
  --testTimeout 120000 --hookTimeout 600000 --testNamePattern "^(?!.*($not_under_qemu))" "${tests[@]/#/$work/test/}"
