#include "luo.h"

#include <fcntl.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

#include "liveupdate/abi.h"

namespace lu {
namespace {

// Issues one ioctl, retrying on EINTR; 0 or -errno.
int ioctl_call(int fd, unsigned long request, void* arg) {
  int rc;
  do {
    rc = ::ioctl(fd, request, arg);
  } while (rc < 0 && errno == EINTR);
  return rc < 0 ? -errno : rc;
}

// The name field is NUL-terminated: 63 bytes at most. Callers validate names
// first; this guard keeps a bad call from reaching the kernel truncated or
// cut at an embedded NUL. A name that does not fit is -ENAMETOOLONG, which no
// caller can mistake for the kernel's -EINVAL (a session already retrieved);
// an empty one, or one with a NUL, is -EINVAL, as the kernel says for "".
int copy_name(uint8_t (&field)[LU_SESSION_NAME_SIZE], std::string_view name) {
  if (name.size() >= LU_SESSION_NAME_SIZE) return -ENAMETOOLONG;
  if (name.empty() || name.find('\0') != std::string_view::npos) return -EINVAL;
  std::memcpy(field, name.data(), name.size());
  return 0;
}

int session_call(int device_fd, unsigned long request, std::string_view name) {
  lu_session_args args = {.size = sizeof(args), .fd = -1, .name = {}};
  if (int rc = copy_name(args.name, name); rc < 0) return rc;
  int rc = ioctl_call(device_fd, request, &args);
  return rc < 0 ? rc : args.fd;
}

}  // namespace

int open_device(const char* path) {
  int fd;
  do {
    fd = ::open(path, O_RDWR | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  return fd < 0 ? -errno : fd;
}

int create_session(int device_fd, std::string_view name) {
  return session_call(device_fd, LU_IOC_CREATE_SESSION, name);
}

int retrieve_session(int device_fd, std::string_view name) {
  return session_call(device_fd, LU_IOC_RETRIEVE_SESSION, name);
}

int preserve_fd(int session_fd, int fd, uint64_t token) {
  lu_fd_args args = {.size = sizeof(args), .fd = fd, .token = token};
  return ioctl_call(session_fd, LU_IOC_SESSION_PRESERVE_FD, &args);
}

int retrieve_fd(int session_fd, uint64_t token) {
  lu_fd_args args = {.size = sizeof(args), .fd = -1, .token = token};
  int rc = ioctl_call(session_fd, LU_IOC_SESSION_RETRIEVE_FD, &args);
  return rc < 0 ? rc : args.fd;
}

int finish_session(int session_fd) {
  lu_finish_args args = {.size = sizeof(args), .reserved = 0};
  return ioctl_call(session_fd, LU_IOC_SESSION_FINISH, &args);
}

int get_session_name(int session_fd, std::string& name) {
  lu_get_name_args args = {.size = sizeof(args), .reserved = 0, .name = {}};
  int rc = ioctl_call(session_fd, LU_IOC_SESSION_GET_NAME, &args);
  if (rc < 0) return rc;
  const char* text = reinterpret_cast<const char*>(args.name);
  name.assign(text, strnlen(text, sizeof(args.name)));
  return 0;
}

}  // namespace lu
