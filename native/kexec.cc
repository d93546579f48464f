#include "kexec.h"

#include <fcntl.h>
#include <linux/reboot.h>
#include <sys/stat.h>
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

UniqueFd open_read(const char* path, int extra_flags = 0) {
  int fd;
  do {
    fd = ::open(path, O_RDONLY | O_CLOEXEC | extra_flags);
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

namespace {

// fstat: 0 for a regular file, -EINVAL for anything else, or -errno.
int regular_file(int fd, struct stat& st) {
  if (::fstat(fd, &st) < 0) return -errno;
  return S_ISREG(st.st_mode) ? 0 : -EINVAL;
}

}  // namespace

int kexec_open_image(const char* path) {
  // Looked at through O_PATH first: opening a device for reading can act
  // (a watchdog starts, a tape rewinds); an O_PATH open calls no driver.
  // (A path on FUSE can still make its daemon wait: the lookup and the
  // open ask it. The Promise form waits in the thread pool, never on the
  // event loop.)
  UniqueFd where = open_read(path, O_PATH);
  if (!where.valid()) return -errno;
  struct stat first{};
  if (int rc = regular_file(where.get(), first); rc < 0) return rc;
  // The path may have been replaced since: O_NONBLOCK keeps a FIFO put
  // there from blocking the open, and the second fstat must find the file
  // that was checked.
  UniqueFd fd = open_read(path, O_NONBLOCK);
  if (!fd.valid()) return -errno;
  struct stat second{};
  if (int rc = regular_file(fd.get(), second); rc < 0) return rc;
  if (first.st_dev != second.st_dev || first.st_ino != second.st_ino) return -EAGAIN;
  return fd.release();
}

int kexec_load(int kernel_fd, int initrd_fd, std::string_view cmdline) {
  unsigned long flags = initrd_fd < 0 ? KEXEC_FILE_NO_INITRAMFS : 0;
  // The kernel wants the command line's length including its NUL.
  std::string line(cmdline);
  return static_cast<int>(kexec_file_load(kernel_fd, initrd_fd, line.c_str(), line.size() + 1, flags));
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
