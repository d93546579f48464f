#!/usr/bin/env bash
# npm run test:newest-node: the host tests on the newest Node.js in Debian's
# archive (sid), unpacked by scripts/debian-node.sh, not installed. Run
# `npm run compile` first (npm test does).
#
# Debian's node loads some of its built-in modules from /usr/share/nodejs,
# which is in the unpacked tree, not on this machine: the tests run in a
# user and mount namespace of their own where the tree's /usr/share is laid
# over the machine's (a read-only overlay the rest of the machine never sees).
# Arguments go to vitest (e.g. test file filters); without any, every host
# test but the packing and build-system ones (test/pack, test/build): those
# prove the package as npm and node-gyp make it, which npm test does on the
# Node it runs, and they are most of the time; and those that need users
# other than root or the machine's own kernel log (test/agent-identity,
# test/kernel-log): this namespace maps one uid and has no /dev/kmsg of its
# own, and what they prove is the kernel's answer, not Node's.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[[ -f dist/index.js ]] || { echo "test:newest-node: no dist/: run npm run compile" >&2; exit 1; }
tree=$(bash scripts/debian-node.sh "$(dpkg --print-architecture)")
if (($# == 0)); then
  for f in test/*.test.ts conformance/test/*.test.ts; do
    case $f in test/pack.test.ts | test/build.test.ts | test/agent-identity.test.ts | test/kernel-log.test.ts) ;; *) set -- "$@" "$f" ;; esac
  done
fi

PATH="$tree/usr/bin:$PATH" LIVEUPDATE_SKIP_KERNEL_TESTS=1 unshare --user --map-root-user --mount --fork bash -euc '
  mount -t overlay overlay -o "lowerdir=$1/usr/share:/usr/share" /usr/share
  echo "test:newest-node: node $(node --version) ($(command -v node))" >&2
  shift
  exec node node_modules/vitest/vitest.mjs run --project host "$@"
' _ "$tree" "$@"
