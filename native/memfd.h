// memfd.h - memfd_create, file seals and hole punching, as thin syscall wrappers:
// results on success, -errno on failure.
#pragma once

#include <cstdint>

namespace lu {

// memfd_create(name, flags): a new anonymous file.
int memfd_create(const char* name, unsigned flags);

// fcntl(fd, F_ADD_SEALS, seals).
int add_seals(int fd, int seals);

// fcntl(fd, F_GET_SEALS): the seal mask.
int get_seals(int fd);

// fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length):
// frees the pages of the range (reads return zeros), the size stays.
int punch_hole(int fd, int64_t offset, int64_t length);

}  // namespace lu
