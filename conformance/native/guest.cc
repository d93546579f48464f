// guest.cc - mount, power-off and the fd limit for the test guest's /init.
#include "guest.h"

#include <linux/reboot.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace lu {

int mount_fs(const std::string& source, const std::string& target,
             const std::string& fstype, unsigned long flags, const char* data) {
  int rc;
  do {
    rc = ::mount(source.c_str(), target.c_str(), fstype.c_str(), flags, data);
  } while (rc < 0 && errno == EINTR);
  return rc < 0 ? -errno : 0;
}

int power_off() {
  // Pid 1 is about to end the machine: flush what the guest wrote first.
  ::sync();
  long rc = ::syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2,
                      LINUX_REBOOT_CMD_POWER_OFF, nullptr);
  return rc < 0 ? -errno : 0;
}

int set_rlimit_nofile(unsigned long soft, unsigned long hard) {
  struct rlimit limit = {.rlim_cur = soft, .rlim_max = hard};
  return ::setrlimit(RLIMIT_NOFILE, &limit) < 0 ? -errno : 0;
}

}  // namespace lu
