// peercred.h - who is at the other end of a Unix socket: SO_PEERCRED and
// SO_PEERGROUPS as a thin wrapper with no N-API in it (0 or -errno).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <vector>

namespace lu {

// NGROUPS_MAX of the kernel: no process has more supplementary groups, so
// a peer's list longer than this is refused rather than allocated.
inline constexpr size_t kMaxPeerGroups = 65536;

// The credentials the kernel recorded for the peer when the connection was
// made (connect() or socketpair()): they do not change if the peer later
// changes its ids or exits and its pid is reused, and a forged value cannot
// be sent.
struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  // The primary gid first, then the supplementary groups (SO_PEERGROUPS),
  // each once.
  std::vector<gid_t> groups;
};

// getsockopt(SOL_SOCKET, SO_PEERCRED) and (SO_PEERGROUPS) on a connected
// Unix socket.
int peer_credentials(int fd, PeerCredentials& out);

}  // namespace lu
