// lu-init - pid 1 of the test guest when node, its libraries and the kernels
// come on the system disk: a read-only ext2 image the host attaches as the
// first virtio disk (/dev/vda). It mounts the disk, binds its usr, lib, lib64
// and boot over the initramfs's, and becomes node running the guest runner
// (/init.js).
//
// Why a disk: every kexec copies, digests (twice) and unpacks the initrd it
// carries to the next kernel, and under emulation that costs seconds per
// 10 MB. Node alone is 90 MB; on the disk it never travels, and the disk
// stays attached across kexecs, so each kernel mounts it again here.
//
// Static, with no arguments: it runs before there is any C library.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#define DISK "/dev/vda"
#define DISK_MOUNT "/system"
#define NODE "/usr/bin/node"
#define RUNNER "/init.js"

static const char *const bound_dirs[] = {"usr", "lib", "lib64", "boot"};

// Pid 1 exiting panics the kernel: the host then reports the guest's output,
// this line included.
static void die(const char *what) {
  fprintf(stderr, "lu-init: %s: %s\n", what, strerror(errno));
  _exit(1);
}

static void make_dir(const char *path) {
  if (mkdir(path, 0755) < 0 && errno != EEXIST) die(path);
}

// /dev only for as long as it takes to mount the disk: the runner mounts
// devtmpfs on /dev itself.
static void mount_disk(void) {
  make_dir("/dev");
  if (mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, NULL) < 0) die("mount devtmpfs on /dev");
  make_dir(DISK_MOUNT);
  if (mount(DISK, DISK_MOUNT, "ext2", MS_RDONLY, NULL) < 0)
    die("mount " DISK " (the system disk; the kernel needs CONFIG_VIRTIO_PCI, CONFIG_VIRTIO_BLK and CONFIG_EXT2_FS built in)");
  if (umount("/dev") < 0) die("umount /dev");
}

static void bind_from_disk(const char *name) {
  char from[64], to[64];
  snprintf(from, sizeof from, DISK_MOUNT "/%s", name);
  snprintf(to, sizeof to, "/%s", name);
  make_dir(to);
  if (mount(from, to, NULL, MS_BIND, NULL) < 0) die(to);
}

// Node's 90 MB would otherwise come in by page faults, one readahead window
// at a time, each a round trip through the emulated disk: ask for all of it
// at once, in large requests, while the kernel still has nothing else to do.
static void prefetch(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;  // execve says what is wrong with it
  posix_fadvise(fd, 0, 0, POSIX_FADV_WILLNEED);
  close(fd);
}

int main(int argc, char **argv, char **envp) {
  (void)argc;
  (void)argv;
  mount_disk();
  for (size_t i = 0; i < sizeof bound_dirs / sizeof bound_dirs[0]; i++) bind_from_disk(bound_dirs[i]);
  prefetch(NODE);
  char *const node_argv[] = {(char *)NODE, (char *)RUNNER, NULL};
  execve(NODE, node_argv, envp);
  die("execve " NODE);
}
