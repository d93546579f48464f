// lu-init - pid 1 of the test guest when node, its libraries and the kernels
// come on the system disk (system-disk.h): it mounts the disk and becomes
// node running the guest runner (/init.js).
//
// Why a disk: every kexec copies, digests (twice) and unpacks the initrd it
// carries to the next kernel, and under emulation that costs seconds per
// 10 MB. Node alone is 90 MB; on the disk it never travels, and the disk
// stays attached across kexecs, so each kernel mounts it again here.
//
// Static, with no arguments: it runs before there is any C library.
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "system-disk.h"

#define RUNNER "/init.js"

// Pid 1 exiting panics the kernel: the host then reports the guest's output,
// this line included.
static void die(const char *what) {
  fprintf(stderr, "lu-init: %s: %s\n", what, strerror(errno));
  _exit(1);
}

int main(int argc, char **argv, char **envp) {
  (void)argc;
  (void)argv;
  // /dev only for as long as it takes to mount the disk: the runner mounts
  // devtmpfs on /dev itself.
  if (mkdir("/dev", 0755) < 0 && errno != EEXIST) die("mkdir /dev");
  if (mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, NULL) < 0) die("mount devtmpfs on /dev");
  const char *failed = mount_system_disk();
  if (failed != NULL) die(failed);
  if (umount("/dev") < 0) die("umount /dev");
  char *const node_argv[] = {(char *)SYSTEM_DISK_NODE, (char *)RUNNER, NULL};
  execve(SYSTEM_DISK_NODE, node_argv, envp);
  die("execve " SYSTEM_DISK_NODE);
}
