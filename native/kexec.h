// kexec.h - kexec_file_load and reboot(LINUX_REBOOT_CMD_KEXEC) as thin
// wrappers: 0 (or a result) on success, -errno on failure.
#pragma once

#include <string_view>

namespace lu {

// Opens `kernel` (and `initrd` unless null) and loads them with kexec_file_load.
int kexec_load(const char* kernel, const char* initrd, std::string_view cmdline);

// kexec_file_load with KEXEC_FILE_UNLOAD: forgets the loaded image.
int kexec_unload();

// /sys/kernel/kexec_loaded: 1 if an image is loaded, 0 if not (or if the
// kernel has no kexec at all).
int kexec_loaded();

// Whether kexec_file_load exists and may be called, without loading or
// unloading anything: 0 if so, -ENOSYS without it, -EPERM when not permitted.
int kexec_file_probe();

// sync(), then reboot(LINUX_REBOOT_CMD_KEXEC). Returns only on failure:
// -ENOSYS where the kernel has no kexec at all (no /sys/kernel/kexec_loaded).
int kexec_execute(bool sync_first);

}  // namespace lu
