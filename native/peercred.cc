#include "peercred.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

// Linux 4.13+; older headers lack it.
#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif

namespace lu {
namespace {

// SO_PEERGROUPS fills what fits and, when the list is longer, fails with
// ERANGE and sets the length it needs: one call with room for the common
// case, and a second sized by the kernel's answer, never beyond
// kMaxPeerGroups. The list is fixed at connect, so two calls agree.
int peer_groups(int fd, std::vector<gid_t>& out) {
  out.resize(64);
  for (int attempt = 0; attempt < 2; ++attempt) {
    socklen_t len = static_cast<socklen_t>(out.size() * sizeof(gid_t));
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, out.data(), &len) == 0) {
      out.resize(len / sizeof(gid_t));
      return 0;
    }
    if (errno != ERANGE) return -errno;
    size_t needed = len / sizeof(gid_t);
    if (needed > kMaxPeerGroups || needed <= out.size()) return -ERANGE;
    out.resize(needed);
  }
  return -ERANGE;
}

}  // namespace

int peer_credentials(int fd, PeerCredentials& out) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return -errno;
  if (len != sizeof(cred)) return -EINVAL;
  std::vector<gid_t> supplementary;
  if (int rc = peer_groups(fd, supplementary); rc < 0) return rc;
  out = {.pid = cred.pid, .uid = cred.uid, .gid = cred.gid, .groups = {}};
  // The kernel keeps the list sorted and unique; sorting again costs
  // little and makes "each once" hold without trusting that.
  std::sort(supplementary.begin(), supplementary.end());
  supplementary.erase(std::unique(supplementary.begin(), supplementary.end()), supplementary.end());
  out.groups.reserve(supplementary.size() + 1);
  out.groups.push_back(cred.gid);
  for (gid_t g : supplementary) {
    if (g != cred.gid) out.groups.push_back(g);
  }
  return 0;
}

}  // namespace lu
