// guest.h - thin wrappers of the syscalls the test guest's /init needs and
// Node lacks. No N-API here: each call returns 0 on success and -errno on
// failure, like native/luo.h.
#pragma once

#include <string>

namespace lu {

// mount(2). `data` may be null (no filesystem-specific options).
int mount_fs(const std::string& source, const std::string& target,
             const std::string& fstype, unsigned long flags, const char* data);

// sync(2), then reboot(LINUX_REBOOT_CMD_POWER_OFF). Returns only on failure.
int power_off();

// setrlimit(RLIMIT_NOFILE, {soft, hard}).
int set_rlimit_nofile(unsigned long soft, unsigned long hard);

}  // namespace lu
