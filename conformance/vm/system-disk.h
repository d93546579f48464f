// system-disk.h - mounting the test guest's system disk: a read-only ext2
// image the host attaches as the first virtio disk (/dev/vda), which holds
// node, its libraries and the kernels (see lib/vm/initramfs.ts). Used by the
// programs that run as pid 1: lu-init, and the benchmark's luo_bench, which
// starts node before /init runs. Header-only: each of them is one static
// program built from one source file.
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#define SYSTEM_DISK "/dev/vda"
#define SYSTEM_DISK_MOUNT "/system"
#define SYSTEM_DISK_NODE "/usr/bin/node"

// Node's 90 MB would otherwise come in by page faults, one readahead window
// at a time, each a round trip through the emulated disk: ask for all of it
// at once, in large requests, while the kernel still has nothing else to do.
static inline void system_disk_prefetch(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;  // whoever runs it says what is wrong with it
  posix_fadvise(fd, 0, 0, POSIX_FADV_WILLNEED);
  close(fd);
}

// Mounts the disk and binds its usr, lib, lib64 and boot over the
// initramfs's. Needs devtmpfs on /dev. Does nothing where node is already
// there: in an image without a disk, or after an earlier pid 1 program did
// it. Returns NULL, or the step that failed (errno says why).
static inline const char *mount_system_disk(void) {
  static const char *const dirs[] = {"usr", "lib", "lib64", "boot"};
  if (access(SYSTEM_DISK_NODE, X_OK) == 0) return NULL;
  if (mkdir(SYSTEM_DISK_MOUNT, 0755) < 0 && errno != EEXIST) return "mkdir " SYSTEM_DISK_MOUNT;
  if (mount(SYSTEM_DISK, SYSTEM_DISK_MOUNT, "ext2", MS_RDONLY, NULL) < 0)
    return "mount " SYSTEM_DISK " (the system disk; the kernel needs CONFIG_VIRTIO_PCI, CONFIG_VIRTIO_BLK and CONFIG_EXT2_FS built in)";
  for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
    char from[64], to[64];
    snprintf(from, sizeof from, SYSTEM_DISK_MOUNT "/%s", dirs[i]);
    snprintf(to, sizeof to, "/%s", dirs[i]);
    if (mkdir(to, 0755) < 0 && errno != EEXIST) return "mkdir of a bind target";
    if (mount(from, to, NULL, MS_BIND, NULL) < 0) return "bind of a system disk directory";
  }
  system_disk_prefetch(SYSTEM_DISK_NODE);
  return NULL;
}
