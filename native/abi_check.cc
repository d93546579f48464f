// Compares include/liveupdate/abi.h with the kernel's <linux/liveupdate.h>
// wherever the build machine has that header: a layout that drifted from the
// kernel's fails the build instead of corrupting an ioctl at run time.
#include "liveupdate/abi.h"

#if defined(__has_include) && __has_include(<linux/liveupdate.h>)
#include <linux/liveupdate.h>

#define LU_SAME_LAYOUT(ours, theirs, field)                                  \
  static_assert(offsetof(ours, field) == offsetof(theirs, field) &&          \
                    sizeof(((ours *)0)->field) == sizeof(((theirs *)0)->field), \
                #ours "." #field " matches " #theirs)

static_assert(LU_IOCTL_TYPE == LIVEUPDATE_IOCTL_TYPE, "ioctl type");
static_assert(LU_SESSION_NAME_SIZE == LIVEUPDATE_SESSION_NAME_LENGTH, "name size");
static_assert(LU_IOC_CREATE_SESSION == LIVEUPDATE_IOCTL_CREATE_SESSION, "CREATE_SESSION");
static_assert(LU_IOC_RETRIEVE_SESSION == LIVEUPDATE_IOCTL_RETRIEVE_SESSION, "RETRIEVE_SESSION");
static_assert(LU_IOC_SESSION_PRESERVE_FD == LIVEUPDATE_SESSION_PRESERVE_FD, "PRESERVE_FD");
static_assert(LU_IOC_SESSION_RETRIEVE_FD == LIVEUPDATE_SESSION_RETRIEVE_FD, "RETRIEVE_FD");
static_assert(LU_IOC_SESSION_FINISH == LIVEUPDATE_SESSION_FINISH, "FINISH");

static_assert(sizeof(lu_session_args) == sizeof(liveupdate_ioctl_create_session), "create size");
LU_SAME_LAYOUT(lu_session_args, liveupdate_ioctl_create_session, size);
LU_SAME_LAYOUT(lu_session_args, liveupdate_ioctl_create_session, fd);
LU_SAME_LAYOUT(lu_session_args, liveupdate_ioctl_create_session, name);
static_assert(sizeof(lu_session_args) == sizeof(liveupdate_ioctl_retrieve_session), "retrieve size");
LU_SAME_LAYOUT(lu_session_args, liveupdate_ioctl_retrieve_session, fd);
LU_SAME_LAYOUT(lu_session_args, liveupdate_ioctl_retrieve_session, name);
static_assert(sizeof(lu_fd_args) == sizeof(liveupdate_session_preserve_fd), "preserve size");
LU_SAME_LAYOUT(lu_fd_args, liveupdate_session_preserve_fd, fd);
LU_SAME_LAYOUT(lu_fd_args, liveupdate_session_preserve_fd, token);
static_assert(sizeof(lu_fd_args) == sizeof(liveupdate_session_retrieve_fd), "retrieve-fd size");
LU_SAME_LAYOUT(lu_fd_args, liveupdate_session_retrieve_fd, fd);
LU_SAME_LAYOUT(lu_fd_args, liveupdate_session_retrieve_fd, token);
static_assert(sizeof(lu_finish_args) == sizeof(liveupdate_session_finish), "finish size");

// GET_NAME arrived after the first LUO release; compare it only when present.
#ifdef LIVEUPDATE_SESSION_GET_NAME
static_assert(LU_IOC_SESSION_GET_NAME == LIVEUPDATE_SESSION_GET_NAME, "GET_NAME");
static_assert(sizeof(lu_get_name_args) == sizeof(liveupdate_session_get_name), "get-name size");
LU_SAME_LAYOUT(lu_get_name_args, liveupdate_session_get_name, name);
#endif

// Exported so a build log or a test can tell which check ran.
extern "C" const char lu_abi_checked_against[] = "linux/liveupdate.h";
#else
extern "C" const char lu_abi_checked_against[] = "";
#endif
