#!/usr/bin/env bash
# Fetch Debian's newest Node.js (sid) for an architecture, unpacked, not
# installed: nodejs, libnode and every library they load (glibc included)
# are downloaded through a private apt root and extracted with dpkg-deb into
# one directory tree. The machine's apt configuration and packages are never
# touched.
#
#   scripts/debian-node.sh ARCH      (ARCH: amd64, arm64, ...)
#
# Prints the tree's directory. For the host's architecture, the node binary
# is patched (patchelf) to load its libraries from the tree, so it runs
# directly, and so do the processes it spawns with process.execPath. Another
# architecture runs under qemu-user: `QEMU_LD_PREFIX=<tree> qemu-aarch64
# <tree>/usr/bin/node` (scripts/test-arm64.sh).
# Cached under ${LIVEUPDATE_CACHE:-~/.cache/liveupdate}/node/.
set -euo pipefail

arch=${1:?usage: debian-node.sh ARCH}
cache="${LIVEUPDATE_CACHE:-$HOME/.cache/liveupdate}/node"
root="$cache/apt-$arch"
say() { printf '[debian-node] %s\n' "$*" >&2; }

mkdir -p "$root/lists/partial" "$root/cache/archives/partial" "$root/parts"
cat > "$root/sources.list" <<LIST
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main
LIST
apt_private() {
  local tool=$1; shift
  "$tool" -qq \
    -o Dir::Etc::SourceList="$root/sources.list" \
    -o Dir::Etc::SourceParts="$root/parts" \
    -o Dir::State::Lists="$root/lists" \
    -o Dir::State::status=/dev/null \
    -o Dir::Cache="$root/cache" \
    -o APT::Architecture="$arch" \
    -o APT::Architectures::="$arch" \
    -o Debug::NoLocking=1 \
    -o APT::Sandbox::User=root \
    "$@"
}

# The lists are refreshed once a day.
if [[ -z "$(find "$root/lists" -maxdepth 1 -name '.updated' -mtime -1 2>/dev/null)" ]]; then
  say "apt update (private sources: sid, $arch)"
  apt_private apt-get update
  touch "$root/lists/.updated"
fi
version=$(apt_private apt-cache show nodejs 2>/dev/null | awk '/^Version:/ {print $2; exit}')
[[ -n "$version" ]] || { say "no nodejs for $arch in sid"; exit 1; }
tree="$cache/$arch-${version//[^A-Za-z0-9.+-]/_}"
if [[ ! -x "$tree/usr/bin/node" ]]; then
  # nodejs and what it depends on, recursively, without recommends.
  mapfile -t packages < <(apt_private apt-cache depends --recurse --no-recommends --no-suggests \
    --no-conflicts --no-breaks --no-replaces --no-enhances nodejs 2>/dev/null | grep -v '^[ <]' | sort -u)
  say "downloading nodejs $version ($arch) and ${#packages[@]} packages"
  debs="$root/debs-$version"
  mkdir -p "$debs"
  (cd "$debs" && apt_private apt-get download "${packages[@]/%/:$arch}")
  rm -rf "$tree.tmp" && mkdir -p "$tree.tmp"
  for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$tree.tmp"; done
  # Debian's merged /usr: the dynamic loader is looked up under /lib.
  for dir in lib lib64; do
    [[ -e "$tree.tmp/$dir" || ! -d "$tree.tmp/usr/$dir" ]] || ln -s "usr/$dir" "$tree.tmp/$dir"
  done
  if [[ "$arch" == "$(dpkg --print-architecture)" ]]; then
    command -v patchelf >/dev/null || { say "patchelf is missing: apt-get install patchelf"; exit 1; }
    multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
    interp=$(find "$tree.tmp/usr/lib/$multiarch" "$tree.tmp/lib/$multiarch" -maxdepth 1 -name 'ld-linux*.so.*' 2>/dev/null | head -1)
    [[ -n "$interp" ]] || { say "no dynamic loader in the unpacked libc6"; exit 1; }
    # Final paths: the tree is renamed below.
    patchelf --set-interpreter "${interp/$tree.tmp/$tree}" --force-rpath \
      --set-rpath "$tree/usr/lib/$multiarch:$tree/lib/$multiarch" "$tree.tmp/usr/bin/node"
  fi
  rm -rf "$tree" && mv "$tree.tmp" "$tree"
  rm -rf "$debs"
fi
echo "$tree"
