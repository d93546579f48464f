// luo.h - one thin function per LUO ioctl. No N-API here: each call returns
// its result (an fd, or 0) on success and -errno on failure.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace lu {

// open(path, O_RDWR | O_CLOEXEC): the LUO device; one owner at a time.
int open_device(const char* path);

// LIVEUPDATE_IOCTL_CREATE_SESSION on the device fd: a new outgoing session.
int create_session(int device_fd, std::string_view name);

// LIVEUPDATE_IOCTL_RETRIEVE_SESSION on the device fd: an incoming session.
int retrieve_session(int device_fd, std::string_view name);

// LIVEUPDATE_SESSION_PRESERVE_FD on an outgoing session fd.
int preserve_fd(int session_fd, int fd, uint64_t token);

// LIVEUPDATE_SESSION_RETRIEVE_FD on an incoming session fd: a new fd.
int retrieve_fd(int session_fd, uint64_t token);

// LIVEUPDATE_SESSION_FINISH on an incoming session fd.
int finish_session(int session_fd);

// LIVEUPDATE_SESSION_GET_NAME: fills `name` on success.
int get_session_name(int session_fd, std::string& name);

}  // namespace lu
