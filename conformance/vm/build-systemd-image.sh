#!/usr/bin/env bash
# Build (or reuse) the systemd guest image: a Debian sid root filesystem with
# systemd as PID 1 and Debian's node, as an ext4 disk image the test bed boots
# on the LUO test kernels (root=/dev/vda).
#
#   vm/build-systemd-image.sh          (prints the image's path on stdout)
#   vm/build-systemd-image.sh --hash   (the cache key of the current recipe)
#
# The image is cached under $LIVEUPDATE_CACHE (default ~/.cache/liveupdate) in
# systemd/<hash of this file>/: this file is the whole recipe (the package
# list, mmdebstrap's options, the hooks), so changing any of it builds a new
# image and nothing else does (sid moves on; a cached image keeps the
# versions it was built with: packages.txt beside it lists them).
# lib/vm/systemd-image.ts computes the same key.
#
# The image holds no part of this project: each run gets a copy with its
# files written in (lib/vm/systemd-image.ts), and the enabled unit
# lu-runner.service starts the test bed's runner (/lu/runner.js) once
# multi-user.target is reached, on every boot that carries one.
# Progress goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${LIVEUPDATE_CACHE:-$HOME/.cache/liveupdate}"
start=$SECONDS

# What the guest runs: systemd as PID 1 (systemd-sysv makes it /sbin/init),
# udev for its device units, mount (no longer essential in sid; systemd runs
# it for every mount unit: /tmp, mqueue, debugfs, the root's remount),
# libseccomp2 (systemd loads it for units' SystemCallFilter=, as on any
# Debian host, which installs it as a recommendation), node for the
# library and the runner, QEMU for the real VMM whose guest survives the
# host's kexec, and sshd with python3 for the fleet's ansible-playbook.
packages=(systemd systemd-sysv udev mount libseccomp2 nodejs qemu-system-x86 openssh-server python3)
mirror="http://deb.debian.org/debian"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
# Room left free on the root filesystem for what the runs write (units, state, logs).
free_mib=256

say() { printf '[vm:systemd-image %4ds] %s\n' "$((SECONDS - start))" "$*" >&2; }
die() { say "error: $*"; exit 1; }

image_hash() { sha256sum < "$here/build-systemd-image.sh" | cut -c1-12; }

[[ "${1:-}" == --hash ]] && { image_hash; exit 0; }

out="$cache/systemd/$(image_hash)"
if [[ -f "$out/rootfs.img" ]]; then
  say "cached $out/rootfs.img"
  echo "$out/rootfs.img"
  exit 0
fi

missing=()
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
command -v gpgv >/dev/null || missing+=(gpgv)
[[ -x /usr/sbin/mke2fs || -n "$(command -v mke2fs)" ]] || missing+=(e2fsprogs)
[[ -f "$keyring" ]] || missing+=(debian-archive-keyring)
((${#missing[@]} == 0)) || die "tools are missing: apt-get install ${missing[*]}"
((EUID == 0)) || die "mmdebstrap's root mode needs root (it creates device nodes and file owners)"

# The Release file of sid must verify with the host's keyring before anything
# is downloaded: a host whose keyring predates sid's signing keys gets one line
# that says how to fix it, not apt's page of output.
check_signature() {
  # Without curl, apt's own check below still refuses a bad signature, only less plainly.
  command -v curl >/dev/null || return 0
  local release ok=1; release="$(mktemp)"
  curl -fsSL "$mirror/dists/sid/InRelease" -o "$release" || ok=0
  ((ok == 0)) || gpgv --keyring "$keyring" "$release" >/dev/null 2>&1 || ok=2
  rm -f "$release"
  ((ok != 0)) || die "cannot fetch $mirror/dists/sid/InRelease"
  ((ok != 2)) || die "sid's Release file does not verify with $keyring (its signing keys are newer than the host's debian-archive-keyring): install a newer one (apt-get install -t bookworm-backports debian-archive-keyring, or the .deb from sid)"
}
check_signature

work="$cache/systemd/build.$$"
rm -rf "$work"; mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
tree="$work/root"
log="$work/mmdebstrap.log"
say "mmdebstrap: Debian sid, variant essential + ${packages[*]} (about 2 minutes)"
# The hooks run on the host with the root filesystem's path as $1.
hooks=(
  # The root filesystem is the first virtio disk; no fsck (the image is new for every run).
  --customize-hook='echo "/dev/vda / ext4 rw 0 0" > "$1/etc/fstab"'
  --customize-hook='echo lu-systemd > "$1/etc/hostname"'
  # A fixed machine id: no first-boot setup (systemd-firstboot would prompt on the console).
  --customize-hook='echo 4c5573797374656d6420696d61676531 > "$1/etc/machine-id"'
  --customize-hook='ln -sf /dev/null "$1/etc/systemd/system/systemd-firstboot.service"'
  # No logins on the consoles: the console carries the kernel log and the runner's progress.
  --customize-hook='ln -sf /dev/null "$1/etc/systemd/system/serial-getty@.service"'
  --customize-hook='ln -sf /dev/null "$1/etc/systemd/system/getty@.service"'
  --customize-hook='ln -sf /dev/null "$1/etc/systemd/system/getty-static.service"'
  --customize-hook='mkdir -p "$1/etc/systemd/journald.conf.d" && printf "[Journal]\nStorage=volatile\n" > "$1/etc/systemd/journald.conf.d/lu.conf"'
  # The test bed's runner: started once the system is up, on boots that carry one.
  # A runner that dies (where pid 1 would panic the kernel) powers the guest
  # off, so the host sees the run end at once instead of at its timeout; the
  # stop on the way to a kexec (SIGTERM) is no failure.
  --customize-hook='cat > "$1/etc/systemd/system/lu-runner.service" <<UNIT
[Unit]
Description=liveupdate test bed runner
After=multi-user.target
ConditionPathExists=/lu/runner.js
FailureAction=poweroff-force

[Service]
Type=exec
ExecStart=/usr/bin/node /lu/runner.js
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
UNIT'
  --customize-hook='mkdir -p "$1/etc/systemd/system/multi-user.target.wants" && ln -sf ../lu-runner.service "$1/etc/systemd/system/multi-user.target.wants/lu-runner.service"'
  --customize-hook='chroot "$1" dpkg-query -W -f="\${Package} \${Version}\n" > "$1/../packages.txt"'
  # apt's lists and downloaded packages are not needed to boot.
  --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*'
)
include="$(IFS=,; echo "${packages[*]}")"
# The signatures are checked (above, and by apt), but not Valid-Until: the
# archive a machine reaches may be a mirror weeks behind its clock (the one
# here served a Release file 28 days past its Valid-Until), which apt would
# refuse outright.
if ! mmdebstrap --mode=root --variant=essential --include="$include" "${hooks[@]}" \
  --aptopt='Acquire::Check-Valid-Until "false"' \
  sid "$tree" "deb [signed-by=$keyring] $mirror sid main" > "$log" 2>&1; then
  tail -30 "$log" >&2
  die "mmdebstrap failed (the log above)"
fi
say "root filesystem: $(du -sh "$tree" | cut -f1)"
systemd_version="$(awk '$1 == "systemd" {print $2}' "$work/packages.txt")"
node_version="$(awk '$1 == "nodejs" {print $2}' "$work/packages.txt")"
used_kib="$(du -sk "$tree" | cut -f1)"
size_kib=$((used_kib * 12 / 10 + free_mib * 1024))
say "ext4 image of $((size_kib / 1024)) MiB (mke2fs -d)"
# mke2fs says "Creating regular file" even with -q: stdout is for the path alone.
mke2fs -q -F -t ext4 -L lu-systemd -d "$tree" "$work/rootfs.img" "${size_kib}k" >&2
mkdir -p "$out"
cp "$work/packages.txt" "$out/packages.txt"
echo "systemd $systemd_version, node $node_version" > "$out/versions"
echo "$((SECONDS - start))" > "$out/build-seconds"
mv "$work/rootfs.img" "$out/rootfs.img"
# Images of earlier recipes are never used again (the key is this file's hash).
find "$cache/systemd" -mindepth 1 -maxdepth 1 -type d ! -name "$(basename "$out")" ! -name "build.*" -exec rm -rf {} +
say "built $out/rootfs.img (systemd $systemd_version, node $node_version; $(du -h --apparent-size "$out/rootfs.img" | cut -f1), $(du -h "$out/rootfs.img" | cut -f1) used) in $((SECONDS - start)) s"
echo "$out/rootfs.img"
