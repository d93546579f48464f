/*
 * liveupdate/abi.h - the Live Update Orchestrator's userspace ABI, as this
 * project uses it.
 *
 * Written for this project from the facts of the kernel's uAPI
 * (include/uapi/linux/liveupdate.h, Linux 6.19+): ioctl numbers, structure
 * layouts and sizes. Every structure starts with `size`, which the caller sets
 * to sizeof the structure it passes; the kernel uses it to tell ABI versions
 * apart. The static_asserts below pin each layout; native/abi_check.cc
 * compares them with <linux/liveupdate.h> wherever the build machine has one.
 */
#ifndef LIVEUPDATE_ABI_H
#define LIVEUPDATE_ABI_H

#include <linux/ioctl.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ioctl type byte, shared by the device and the session fds. */
#define LU_IOCTL_TYPE 0xBA

/* A session name's field, including its terminating NUL: names are 1..63 bytes. */
#define LU_SESSION_NAME_SIZE 64

/* Path of the LUO character device. */
#define LU_DEVICE_PATH "/dev/liveupdate"

/* Command numbers on /dev/liveupdate. */
#define LU_CMD_CREATE_SESSION 0x00
#define LU_CMD_RETRIEVE_SESSION 0x01

/* Command numbers on a session fd. */
#define LU_CMD_SESSION_PRESERVE_FD 0x40
#define LU_CMD_SESSION_RETRIEVE_FD 0x41
#define LU_CMD_SESSION_FINISH 0x42
#define LU_CMD_SESSION_GET_NAME 0x43

/*
 * LUO encodes no size or direction in its request numbers (_IO): the `size`
 * field at the start of each argument carries the ABI version instead.
 */
#define LU_IOC_CREATE_SESSION _IO(LU_IOCTL_TYPE, LU_CMD_CREATE_SESSION)
#define LU_IOC_RETRIEVE_SESSION _IO(LU_IOCTL_TYPE, LU_CMD_RETRIEVE_SESSION)
#define LU_IOC_SESSION_PRESERVE_FD _IO(LU_IOCTL_TYPE, LU_CMD_SESSION_PRESERVE_FD)
#define LU_IOC_SESSION_RETRIEVE_FD _IO(LU_IOCTL_TYPE, LU_CMD_SESSION_RETRIEVE_FD)
#define LU_IOC_SESSION_FINISH _IO(LU_IOCTL_TYPE, LU_CMD_SESSION_FINISH)
#define LU_IOC_SESSION_GET_NAME _IO(LU_IOCTL_TYPE, LU_CMD_SESSION_GET_NAME)

/*
 * CREATE_SESSION and RETRIEVE_SESSION: in, a NUL-terminated name;
 * out, the new session's fd (O_CLOEXEC).
 */
struct lu_session_args {
  uint32_t size;
  int32_t fd;
  uint8_t name[LU_SESSION_NAME_SIZE];
};

/*
 * PRESERVE_FD: in, the fd to preserve and its token.
 * RETRIEVE_FD: in, the token; out, a new fd (O_CLOEXEC) for the preserved file.
 */
struct lu_fd_args {
  uint32_t size;
  int32_t fd;
  uint64_t token __attribute__((aligned(8)));
};

/* FINISH: no payload; `reserved` must be zero. */
struct lu_finish_args {
  uint32_t size;
  uint32_t reserved;
};

/* GET_NAME: out, the session's NUL-terminated name; `reserved` must be zero. */
struct lu_get_name_args {
  uint32_t size;
  uint32_t reserved;
  uint8_t name[LU_SESSION_NAME_SIZE];
};

#ifdef __cplusplus
#define LU_STATIC_ASSERT static_assert
#else
#define LU_STATIC_ASSERT _Static_assert
#endif

LU_STATIC_ASSERT(sizeof(struct lu_session_args) == 72, "session args are 72 bytes");
LU_STATIC_ASSERT(offsetof(struct lu_session_args, fd) == 4, "session fd at 4");
LU_STATIC_ASSERT(offsetof(struct lu_session_args, name) == 8, "session name at 8");
LU_STATIC_ASSERT(sizeof(struct lu_fd_args) == 16, "fd args are 16 bytes");
LU_STATIC_ASSERT(offsetof(struct lu_fd_args, fd) == 4, "fd at 4");
LU_STATIC_ASSERT(offsetof(struct lu_fd_args, token) == 8, "token at 8");
LU_STATIC_ASSERT(sizeof(struct lu_finish_args) == 8, "finish args are 8 bytes");
LU_STATIC_ASSERT(sizeof(struct lu_get_name_args) == 72, "get-name args are 72 bytes");
LU_STATIC_ASSERT(offsetof(struct lu_get_name_args, name) == 8, "get-name name at 8");
LU_STATIC_ASSERT(LU_IOC_CREATE_SESSION == 0xBA00, "CREATE_SESSION request");
LU_STATIC_ASSERT(LU_IOC_SESSION_GET_NAME == 0xBA43, "GET_NAME request");

#ifdef __cplusplus
}
#endif

#endif /* LIVEUPDATE_ABI_H */
