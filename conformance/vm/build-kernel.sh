#!/usr/bin/env bash
# Build (or reuse) a LUO-capable bzImage from Debian's linux-source package.
#
#   vm/build-kernel.sh 7.2 [7.3 ...]
#   vm/build-kernel.sh --hash      (the cache key of the current inputs)
#   vm/build-kernel.sh --debian-image [7.3]   (Debian's own kernel, without LUO)
#
# Each image is cached under $LIVEUPDATE_CACHE (default ~/.cache/liveupdate)
# keyed by the package version and the hash of the kernel inputs (see
# inputs_hash), so a second run with the same inputs is instant.
# The test-only LUO file handler (vm/luo-test-handler/) is added to the
# source tree as kernel/liveupdate/luo_test_handler.c with a Kconfig option
# of its own, CONFIG_LIVEUPDATE_TEST_HANDLER, which vm/kernel.config enables. apt runs against a private sources list
# and state directory: the machine's own apt configuration is never touched.
# Prints the path of each image on stdout, one per line; progress goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fragment="$here/kernel.config"
handler="$here/luo-test-handler"
cache="${LIVEUPDATE_CACHE:-$HOME/.cache/liveupdate}"
jobs="${LIVEUPDATE_KERNEL_JOBS:-$(($(nproc) + 1))}"
start=$SECONDS

say() { printf '[vm:kernel %4ds] %s\n' "$((SECONDS - start))" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# Every missing tool at once, in one line naming the packages to install.
check_tools() {
  local missing=() pair
  for pair in make:make gcc:gcc flex:flex bison:bison bc:bc apt-get:apt dpkg-deb:dpkg xz:xz-utils perl:perl; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
  done
  [[ -e /usr/include/libelf.h ]] || missing+=(libelf-dev)
  [[ -e /usr/include/openssl/ssl.h ]] || missing+=(libssl-dev)
  ((${#missing[@]} == 0)) || die "kernel build tools are missing: apt-get install ${missing[*]}"
}

# One private apt root holds the sources list, the package lists and the
# downloaded .debs; `apt-get update` against it is cheap to repeat.
apt_private() {
  local root="$cache/apt"
  mkdir -p "$root/lists/partial" "$root/cache/archives/partial" "$root/parts"
  cat > "$root/sources.list" <<LIST
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
LIST
  local tool=$1; shift
  "$tool" -qq \
    -o Dir::Etc::SourceList="$root/sources.list" \
    -o Dir::Etc::SourceParts="$root/parts" \
    -o Dir::State::Lists="$root/lists" \
    -o Dir::Cache="$root/cache" \
    -o Debug::NoLocking=1 \
    -o APT::Sandbox::User=root \
    "$@"
}

fetch_source() {
  local series=$1 dir=$2
  local pkg="linux-source-$series"
  [[ -f "$cache/apt/lists/.updated" ]] || { say "apt update (private sources: sid, trixie-backports)"; apt_private apt-get update; touch "$cache/apt/lists/.updated"; }
  local version
  version="$(apt_private apt-cache show "$pkg" 2>/dev/null | awk '/^Version:/ {print $2; exit}')" || true
  if [[ -z "$version" ]]; then
    say "apt update (no $pkg in cached lists)"; apt_private apt-get update
    version="$(apt_private apt-cache show "$pkg" 2>/dev/null | awk '/^Version:/ {print $2; exit}')"
  fi
  [[ -n "$version" ]] || die "$pkg is not in Debian's sid or trixie-backports"
  echo "$version" > "$dir/.version"
  if [[ ! -f "$dir/source.deb" ]]; then
    say "downloading $pkg $version"
    (cd "$dir" && apt_private apt-get download "$pkg" && mv -f "${pkg}"_*.deb source.deb)
  fi
}

# The cache key: vm/kernel.config, then every file of vm/luo-test-handler in
# byte order of their names (lib/vm/kernels.ts computes the same).
inputs_hash() {
  local files=("$fragment")
  while IFS= read -r name; do files+=("$handler/$name"); done < <(cd "$handler" && LC_ALL=C ls -1)
  cat "${files[@]}" | sha256sum | cut -c1-12
}

# Copies the handler into the tree and hooks it into kernel/liveupdate's
# Kconfig and Makefile. Idempotent, and a file is copied only when it
# changed, so kbuild rebuilds only what did.
install_test_handler() {
  local dir="$1/kernel/liveupdate"
  local from to
  for from in "$handler/luo_test_handler.c" "$handler/luo_test.h" "$handler/Kconfig"; do
    to="$dir/$(basename "$from")"
    [[ "$from" == */Kconfig ]] && to="$dir/Kconfig.test-handler"
    cmp -s "$from" "$to" || cp "$from" "$to"
  done
  grep -q 'Kconfig.test-handler' "$dir/Kconfig" ||
    printf '\nsource "kernel/liveupdate/Kconfig.test-handler"\n' >> "$dir/Kconfig"
  grep -q 'luo_test_handler.o' "$dir/Makefile" ||
    printf '\nobj-$(CONFIG_LIVEUPDATE_TEST_HANDLER)\t+= luo_test_handler.o\n' >> "$dir/Makefile"
}

build_one() {
  local series=$1
  local work="$cache/src/$series"
  mkdir -p "$work"
  fetch_source "$series" "$work"
  local version; version="$(cat "$work/.version")"
  local hash; hash="$(inputs_hash)"
  local out="$cache/kernels/${version}-${hash}"
  if [[ -f "$out/bzImage" ]]; then
    say "$series: cached $out/bzImage"
    echo "$out/bzImage"; return
  fi
  local tree="$work/linux"
  if [[ ! -f "$tree/.extracted-$version" ]]; then
    say "$series: extracting source"
    rm -rf "$tree" "$work/pkg"; mkdir -p "$work/pkg"
    dpkg-deb -x "$work/source.deb" "$work/pkg"
    local tarball; tarball="$(ls "$work"/pkg/usr/src/linux-source-*.tar.* | head -1)"
    mkdir -p "$tree"
    tar -xf "$tarball" -C "$tree" --strip-components=1
    rm -rf "$work/pkg"
    touch "$tree/.extracted-$version"
  fi
  install_test_handler "$tree"
  say "$series: configuring (tinyconfig + vm/kernel.config)"
  make -s -C "$tree" tinyconfig >/dev/null
  "$tree/scripts/kconfig/merge_config.sh" -m -O "$tree" "$tree/.config" "$fragment" >/dev/null
  make -s -C "$tree" olddefconfig >/dev/null
  local missing=()
  while IFS= read -r line; do
    [[ "$line" =~ ^(CONFIG_[A-Z0-9_]+)=y ]] || continue
    grep -qx "${BASH_REMATCH[1]}=y" "$tree/.config" || missing+=("${BASH_REMATCH[1]}")
  done < "$fragment"
  ((${#missing[@]} == 0)) || die "$series: config options did not take: ${missing[*]}"
  say "$series: make -j$jobs bzImage (about 10 minutes on 2 cores)"
  local log="$work/build.log"
  make -C "$tree" -j"$jobs" bzImage > "$log" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 30
    kill -0 "$pid" 2>/dev/null && say "$series: building... $(grep -c '^  CC' "$log") files compiled"
  done
  wait "$pid" || { tail -40 "$log" >&2; die "$series: kernel build failed (log: $log)"; }
  mkdir -p "$out"
  cp "$tree/arch/x86/boot/bzImage" "$out/bzImage.tmp"
  cp "$tree/.config" "$out/config"
  echo "$version" > "$out/version"
  mv "$out/bzImage.tmp" "$out/bzImage"
  say "$series: built $out/bzImage ($(du -h "$out/bzImage" | cut -f1))"
  echo "$out/bzImage"
}

# Debian's own cloud kernel of a series, as Debian builds it: without LUO
# (CONFIG_KEXEC_HANDOVER off), a real kernel for the preflight to refuse.
# Cached as <cache>/kernels-debian/RELEASE/{vmlinuz,config} (the image and its
# build config side by side, as /usr/lib/modules/RELEASE/ holds them).
debian_image() {
  local series=$1 pattern pkg release out tmp
  [[ -f "$cache/apt/lists/.updated" ]] || { say "apt update (private sources: sid, trixie-backports)"; apt_private apt-get update; touch "$cache/apt/lists/.updated"; }
  pattern="^linux-binary-${series//./\\.}\\.[0-9]+\\+deb[0-9]+-cloud-amd64$"
  pkg="$(apt_private apt-cache search --names-only "$pattern" | awk '{print $1}' | sort -V | tail -1)"
  [[ -n "$pkg" ]] || die "no Debian cloud kernel of $series in sid or trixie-backports"
  release=${pkg#linux-binary-}
  out="$cache/kernels-debian/$release"
  if [[ ! -f "$out/vmlinuz" ]]; then
    say "downloading Debian's $release (linux-binary and linux-base, about 15 MB)"
    tmp="$(mktemp -d)"
    (cd "$tmp" && apt_private apt-get download "linux-binary-$release" "linux-base-$release")
    for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tmp/root"; done
    mkdir -p "$out"
    cp "$tmp/root/usr/lib/modules/$release/config" "$out/config"
    cp "$tmp/root/usr/lib/modules/$release/vmlinuz" "$out/vmlinuz.tmp"
    mv "$out/vmlinuz.tmp" "$out/vmlinuz"
    rm -rf "$tmp"
  fi
  echo "$out/vmlinuz"
}

# --hash: print the cache key of the current inputs, and nothing else.
[[ "${1:-}" == --hash ]] && { inputs_hash; exit 0; }
# --debian-image [SERIES]: Debian's own kernel of SERIES (default 7.3), built without LUO.
[[ "${1:-}" == --debian-image ]] && { debian_image "${2:-7.3}"; exit 0; }
(($# > 0)) || set -- 7.2 7.3
check_tools
for series in "$@"; do build_one "$series"; done
