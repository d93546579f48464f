#include "peercred.h"

#include <sys/socket.h>

#include <cerrno>

namespace lu {

int peer_credentials(int fd, PeerCredentials& out) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return -errno;
  if (len != sizeof(cred)) return -EINVAL;
  out = {.pid = cred.pid, .uid = cred.uid, .gid = cred.gid};
  return 0;
}

}  // namespace lu
