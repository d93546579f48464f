// peercred.h - who is at the other end of a Unix socket: SO_PEERCRED as a
// thin wrapper with no N-API in it (0 or -errno).
#pragma once

#include <sys/types.h>

namespace lu {

// The credentials the kernel recorded for the peer when the connection was
// made (connect() or socketpair()): they do not change if the peer later
// changes its ids, and a forged value cannot be sent.
struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

// getsockopt(SOL_SOCKET, SO_PEERCRED) on a connected Unix socket.
int peer_credentials(int fd, PeerCredentials& out);

}  // namespace lu
