// kexec.h - kexec_file_load and reboot(LINUX_REBOOT_CMD_KEXEC) as thin
// wrappers: 0 (or a result) on success, -errno on failure.
#pragma once

#include <string_view>

namespace lu {

// Opens a kernel or initrd image for kexec_load: fstat through an O_PATH
// fd, then O_RDONLY | O_CLOEXEC | O_NONBLOCK (opening a FIFO does not wait
// for a writer) and fstat again. Anything but a regular file is -EINVAL
// (what kexec_file_load says too, but only after its read of a FIFO has
// blocked for as long as no writer comes); a path replaced between the
// two looks is -EAGAIN. Symlinks are followed: root names the image, and
// /boot/vmlinuz is usually a link. Returns the fd or -errno.
int kexec_open_image(const char* path);

// kexec_file_load of images opened with kexec_open_image; initrd_fd < 0
// loads none.
int kexec_load(int kernel_fd, int initrd_fd, std::string_view cmdline);

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
