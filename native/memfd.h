// memfd.h - memfd_create and file seals, as thin syscall wrappers:
// results on success, -errno on failure.
#pragma once

namespace lu {

// memfd_create(name, flags): a new anonymous file.
int memfd_create(const char* name, unsigned flags);

// fcntl(fd, F_ADD_SEALS, seals).
int add_seals(int fd, int seals);

// fcntl(fd, F_GET_SEALS): the seal mask.
int get_seals(int fd);

}  // namespace lu
