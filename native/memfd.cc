#include "memfd.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace lu {

// Called through syscall(2) so that the build needs no particular glibc.
int memfd_create(const char* name, unsigned flags) {
  long fd = ::syscall(SYS_memfd_create, name, flags);
  return fd < 0 ? -errno : static_cast<int>(fd);
}

int add_seals(int fd, int seals) {
  return ::fcntl(fd, F_ADD_SEALS, seals) < 0 ? -errno : 0;
}

int get_seals(int fd) {
  int seals = ::fcntl(fd, F_GET_SEALS);
  return seals < 0 ? -errno : seals;
}

// Retried on EINTR: punching the same hole again is harmless.
int punch_hole(int fd, int64_t offset, int64_t length) {
  int rc;
  do {
    rc = ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
  } while (rc < 0 && errno == EINTR);
  return rc < 0 ? -errno : 0;
}

}  // namespace lu
