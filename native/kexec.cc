#include "kexec.h"

#include <fcntl.h>
#include <linux/reboot.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "unique_fd.h"

#ifndef KEXEC_FILE_UNLOAD
#define KEXEC_FILE_UNLOAD 0x00000001
#endif
#ifndef KEXEC_FILE_NO_INITRAMFS
#define KEXEC_FILE_NO_INITRAMFS 0x00000004
#endif

namespace lu {
namespace {

UniqueFd open_read(const char* path) {
  int fd;
  do {
    fd = ::open(path, O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  return UniqueFd(fd);
}

long kexec_file_load(int kernel_fd, int initrd_fd, const char* cmdline,
                     unsigned long cmdline_len, unsigned long flags) {
  long rc = ::syscall(SYS_kexec_file_load, kernel_fd, initrd_fd, cmdline_len,
                      cmdline, flags);
  return rc < 0 ? -errno : rc;
}

}  // namespace

int kexec_load(const char* kernel, const char* initrd, std::string_view cmdline) {
  UniqueFd kernel_fd = open_read(kernel);
  if (!kernel_fd.valid()) return -errno;
  UniqueFd initrd_fd;
  unsigned long flags = KEXEC_FILE_NO_INITRAMFS;
  if (initrd != nullptr) {
    initrd_fd = open_read(initrd);
    if (!initrd_fd.valid()) return -errno;
    flags = 0;
  }
  // The kernel wants the command line's length including its NUL.
  std::string line(cmdline);
  return static_cast<int>(kexec_file_load(kernel_fd.get(), initrd_fd.get(),
                                          line.c_str(), line.size() + 1, flags));
}

int kexec_unload() {
  return static_cast<int>(kexec_file_load(-1, -1, nullptr, 0, KEXEC_FILE_UNLOAD));
}

int kexec_loaded() {
  UniqueFd fd = open_read("/sys/kernel/kexec_loaded");
  // A kernel without kexec has no such file: nothing can be loaded there.
  if (!fd.valid()) return errno == ENOENT ? 0 : -errno;
  char c = 0;
  ssize_t n = ::read(fd.get(), &c, 1);
  if (n < 0) return -errno;
  return c == '1' ? 1 : 0;
}

int kexec_file_probe() {
  // No flag outside KEXEC_FILE_FLAGS is valid: a kernel with the syscall
  // refuses this with -EINVAL after its permission check and changes
  // nothing; one without it says -ENOSYS.
  constexpr unsigned long kUnknownFlag = 1UL << 31;
  long rc = kexec_file_load(-1, -1, nullptr, 0, kUnknownFlag);
  return rc == -EINVAL ? 0 : static_cast<int>(rc < 0 ? rc : 0);
}

int kexec_execute(bool sync_first) {
  // reboot(LINUX_REBOOT_CMD_KEXEC) says -EINVAL both for "nothing loaded"
  // and for a kernel without kexec. The file exists exactly when the kernel
  // has kexec; without sysfs mounted we cannot tell, and let reboot answer.
  if (::access("/sys/kernel", F_OK) == 0 && ::access("/sys/kernel/kexec_loaded", F_OK) != 0 && errno == ENOENT) {
    return -ENOSYS;
  }
  if (sync_first) ::sync();
  long rc = ::syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2,
                      LINUX_REBOOT_CMD_KEXEC, nullptr);
  return rc < 0 ? -errno : 0;
}

}  // namespace lu
