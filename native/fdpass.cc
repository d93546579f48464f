// fdpass.cc - sendmsg/recvmsg with SCM_RIGHTS, and the stream framing.
//
// Why frames on SOCK_STREAM: the kernel attaches an skb's fds to the recvmsg
// that reads the skb's first byte, and a stream recvmsg may read bytes of
// earlier fd-less sends before it (unix_stream_read_generic only stops
// *after* an skb with fds). A reader that asks for "whatever is there" can
// therefore get fds together with bytes that were sent before them. A frame
// (8-byte header, then exactly `length` bytes) lets the reader ask for
// exactly one message's bytes: the header read starts on the frame's first
// byte, where the fds are, and the body read never crosses into the next
// frame. Fds that show up anywhere but at a frame start are a protocol
// error, closed here and reported.
#include "fdpass.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <new>
#include <utility>

// Linux 6.16+: whether a socket accepts SCM_RIGHTS.
#ifndef SO_PASSRIGHTS
#define SO_PASSRIGHTS 83
#endif

// Linux 6.5+: the sender's pidfd, with SO_PASSPIDFD; older headers lack it.
#ifndef SCM_PIDFD
#define SCM_PIDFD 0x04
#endif

namespace lu {
namespace {

int result_or_errno(int rc) { return rc < 0 ? -errno : rc; }

int64_t now_ms() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// Fills a sockaddr_un; '@' at the start means the abstract namespace, as
// in $NOTIFY_SOCKET. Returns the address length or -errno.
int make_address(const std::string& path, sockaddr_un& addr) {
  std::memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  if (path.empty()) return -EINVAL;
  // Abstract names are not NUL-terminated; paths need room for the NUL.
  bool abstract = path[0] == '@';
  if (path.size() > sizeof addr.sun_path - (abstract ? 0 : 1)) return -ENAMETOOLONG;
  std::memcpy(addr.sun_path, path.data(), path.size());
  if (abstract) addr.sun_path[0] = '\0';
  return static_cast<int>(offsetof(sockaddr_un, sun_path) + path.size() + (abstract ? 0 : 1));
}

void put_u32(uint8_t* out, uint32_t value) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<uint8_t>(value >> (24 - 8 * i));
}

uint32_t get_u32(const uint8_t* in) {
  return (uint32_t{in[0]} << 24) | (uint32_t{in[1]} << 16) | (uint32_t{in[2]} << 8) | in[3];
}

Step again(short events) { return {EAGAIN, events, ""}; }
Step failed(int err, const char* syscall) { return {err, 0, syscall}; }

}  // namespace

int socket_type(int fd) {
  int type = 0;
  int domain = 0;
  socklen_t len = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) return -errno;
  len = sizeof domain;
  if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0) return -errno;
  // SCM_RIGHTS exists only on AF_UNIX sockets.
  if (domain != AF_UNIX) return -EAFNOSUPPORT;
  return type;
}

int socket_kind(int fd) {
  int type = 0;
  socklen_t len = sizeof type;
  return ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 ? -errno : type;
}

int set_cloexec(int fd, bool on) {
  int flags = ::fcntl(fd, F_GETFD);
  if (flags < 0) return -errno;
  int wanted = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
  if (wanted == flags) return 0;
  return result_or_errno(::fcntl(fd, F_SETFD, wanted));
}

int get_cloexec(int fd) {
  int flags = ::fcntl(fd, F_GETFD);
  return flags < 0 ? -errno : (flags & FD_CLOEXEC ? 1 : 0);
}

int set_pass_rights(int fd, bool on) {
  int value = on ? 1 : 0;
  if (::setsockopt(fd, SOL_SOCKET, SO_PASSRIGHTS, &value, sizeof value) == 0) return 1;
  return errno == ENOPROTOOPT ? 0 : -errno;
}

ssize_t peek_message_len(int fd) {
  ssize_t n;
  do {
    n = ::recv(fd, nullptr, 0, MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  return n < 0 ? -errno : n;
}

int readable_bytes(int fd) {
  int n = 0;
  return ::ioctl(fd, FIONREAD, &n) < 0 ? -errno : n;
}

int wait_fd(int fd, short events, int timeout_ms) {
  int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
  for (;;) {
    pollfd p{fd, events, 0};
    int left = deadline < 0 ? -1 : static_cast<int>(std::max<int64_t>(0, deadline - now_ms()));
    int rc = ::poll(&p, 1, left);
    if (rc >= 0) return rc == 0 ? 0 : p.revents;
    if (errno != EINTR) return -errno;
  }
}

int ready_set_open() { return result_or_errno(::epoll_create1(EPOLL_CLOEXEC)); }

int ready_set_arm(int set, int fd, uint64_t id, bool added) {
  epoll_event event{};
  event.events = EPOLLIN | EPOLLONESHOT;
  event.data.u64 = id;
  return result_or_errno(::epoll_ctl(set, added ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &event));
}

void ready_set_remove(int set, int fd) {
  epoll_event unused{};  // Kernels before 2.6.9 wanted one.
  ::epoll_ctl(set, EPOLL_CTL_DEL, fd, &unused);
}

int ready_set_take(int set, uint64_t* ids, int max) {
  constexpr int kBatch = 64;
  epoll_event events[kBatch];
  int n;
  do {
    n = ::epoll_wait(set, events, std::min(max, kBatch), 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  for (int i = 0; i < n; ++i) ids[i] = events[i].data.u64;
  return n;
}

int unix_socket_pair(int type, int fds[2]) {
  return result_or_errno(::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, fds));
}

int unix_bind(int type, const std::string& path) {
  sockaddr_un addr{};
  int len = make_address(path, addr);
  if (len < 0) return len;
  UniqueFd fd(::socket(AF_UNIX, type | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return -errno;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) < 0) return -errno;
  // The kernel's own bound (net.core.somaxconn): a burst of clients connecting
  // at once waits in the queue instead of blocking in connect().
  if (type != SOCK_DGRAM && ::listen(fd.get(), SOMAXCONN) < 0) return -errno;
  return fd.release();
}

int unix_connect(int type, const std::string& path) {
  sockaddr_un addr{};
  int len = make_address(path, addr);
  if (len < 0) return len;
  UniqueFd fd(::socket(AF_UNIX, type | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return -errno;
  // A Unix connect completes at once (or fails: ECONNREFUSED, EAGAIN when
  // the listen backlog is full); it is never left in progress.
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) < 0) return -errno;
  return fd.release();
}

int unix_accept(int fd) { return result_or_errno(::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC)); }

int pipe_cloexec(int fds[2]) { return result_or_errno(::pipe2(fds, O_CLOEXEC)); }

ssize_t send_msg(int fd, const uint8_t* data, size_t len, const int* fds, size_t nfds) {
  iovec iov{const_cast<uint8_t*>(data), len};
  return send_msgv(fd, &iov, 1, fds, nfds);
}

namespace {

// One sendmsg of `iov` with `fds` as SCM_RIGHTS, to `name` if not null.
ssize_t send_to(int fd, const iovec* iov, int iovcnt, const int* fds, size_t nfds, const sockaddr* name, socklen_t name_len, int flags) {
  if (nfds > kMaxFdsPerMessage) return -EINVAL;
  msghdr msg{};
  msg.msg_name = const_cast<sockaddr*>(name);
  msg.msg_namelen = name_len;
  msg.msg_iov = const_cast<iovec*>(iov);
  msg.msg_iovlen = static_cast<size_t>(iovcnt);
  // On the stack: a send allocates nothing.
  alignas(cmsghdr) uint8_t control[CMSG_SPACE(kMaxFdsPerMessage * sizeof(int))];
  if (nfds) {
    std::memset(control, 0, CMSG_SPACE(nfds * sizeof(int)));
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    std::memcpy(CMSG_DATA(cmsg), fds, nfds * sizeof(int));
  }
  for (;;) {
    // MSG_DONTWAIT instead of O_NONBLOCK: per call, leaves shared state alone.
    ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT | flags);
    if (n >= 0) return n;
    if (errno != EINTR) return -errno;
  }
}

}  // namespace

ssize_t send_msgv(int fd, const iovec* iov, int iovcnt, const int* fds, size_t nfds) {
  return send_to(fd, iov, iovcnt, fds, nfds, nullptr, 0, 0);
}

ssize_t send_msg_probing(int fd, const iovec* iov, const int* fds, size_t nfds) {
  // An AF_UNSPEC address only sa_family_t long, and MSG_FASTOPEN:
  // - a connected seqpacket socket ignores both (the address, as POSIX
  //   has connection-mode sockets do): the message is sent;
  // - a Unix stream socket refuses any address before it takes a byte:
  //   EISCONN (EOPNOTSUPP if not connected);
  // - a Unix datagram socket refuses an address this short: EINVAL;
  // - TCP reads MSG_FASTOPEN with an AF_UNSPEC address as a refusal:
  //   EOPNOTSUPP (without the flag it would ignore the address, send the
  //   bytes and drop the fds: SCM_RIGHTS means nothing to it);
  // - UDP refuses an address shorter than a sockaddr_in: EINVAL.
  sockaddr name{};
  name.sa_family = AF_UNSPEC;
  return send_to(fd, iov, 1, fds, nfds, &name, sizeof name.sa_family, MSG_FASTOPEN);
}

namespace {

// How many fds the control data carries (SCM_RIGHTS and SCM_PIDFD).
size_t count_fds(msghdr& msg) {
  size_t n = 0;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && (c->cmsg_type == SCM_RIGHTS || c->cmsg_type == SCM_PIDFD)) {
      n += (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    }
  }
  return n;
}

// Closes every fd in the control data: there was no room to own them.
void close_fds(msghdr& msg) {
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || (c->cmsg_type != SCM_RIGHTS && c->cmsg_type != SCM_PIDFD)) continue;
    size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < n; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      ::close(fd);
    }
  }
}

// Takes ownership of every fd in the control data, so none can leak.
// `info.fds` has room reserved for all of them: nothing allocates here.
void collect_fds(msghdr& msg, RecvInfo& info) {
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET) continue;
    bool rights = c->cmsg_type == SCM_RIGHTS;
    if (!rights && c->cmsg_type != SCM_PIDFD) continue;
    size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < n; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (rights) {
        info.fds.emplace_back(fd);
      } else {
        ::close(fd);  // The kernel's pidfd of the sender: nobody asked for it here.
      }
    }
  }
}

}  // namespace

ssize_t recv_msg(int fd, uint8_t* buf, size_t len, size_t max_fds, bool want_trunc, RecvInfo& info) {
  iovec iov{buf, len};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  // On the stack: a receive of no fds allocates nothing for them.
  alignas(cmsghdr) uint8_t control[CMSG_SPACE(kMaxFdsPerMessage * sizeof(int)) + kExtraControl];
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  int flags = MSG_CMSG_CLOEXEC | MSG_DONTWAIT | (want_trunc ? MSG_TRUNC : 0);
  ssize_t n;
  do {
    n = ::recvmsg(fd, &msg, flags);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  // Room for every fd that came, before any is owned: a failure to make it
  // closes them all (nothing leaks) and is reported as ENOMEM.
  size_t arrived = count_fds(msg);
  if (arrived > 0) {
    try {
      info.fds.reserve(info.fds.size() + arrived);
    } catch (const std::bad_alloc&) {
      close_fds(msg);
      return -ENOMEM;
    }
  }
  collect_fds(msg, info);
  info.ctrunc = (msg.msg_flags & MSG_CTRUNC) != 0 || info.fds.size() > max_fds;
  info.full_len = static_cast<size_t>(n);
  return want_trunc ? static_cast<ssize_t>(std::min(static_cast<size_t>(n), len)) : n;
}

// ---- FdSender ------------------------------------------------------------

FdSender::FdSender(int sock, const uint8_t* data, size_t len, const int* fds, size_t nfds, Framing framing)
    : sock_(sock), data_(data), len_(len), fds_(fds), nfds_(nfds), framing_(framing) {}

bool FdSender::mid_message() const { return type_ == SOCK_STREAM && sent_ > 0 && sent_ < total(); }

size_t FdSender::data_done() const { return sent_ > header_len_ ? sent_ - header_len_ - skipped_ : 0; }

void FdSender::own_bytes() {
  size_t done = data_done();
  owned_.assign(data_ + done, data_ + len_);
  // The bytes sent are never read again: keep the rest only.
  data_ = owned_.data();
  len_ -= done;
  skipped_ += done;
}

Step FdSender::start() { return {}; }

bool FdSender::layout_known() const {
  // Raw bytes are laid out alike on every socket type; only an empty raw
  // message (one NUL on a stream) and a frame (its header) depend on it.
  return type_ != 0 || (framing_ == Framing::kNone && len_ > 0);
}

Step FdSender::set_type(int type) {
  type_ = type;
  if (type_ != SOCK_STREAM) return {};
  if (framing_ == Framing::kFrame) {
    if (len_ > UINT32_MAX) return failed(EMSGSIZE, "sendmsg");
    put_u32(header_, kFrameMagic);
    put_u32(header_ + 4, static_cast<uint32_t>(len_));
    header_len_ = kFrameHeaderSize;
  } else if (len_ == 0) {
    header_len_ = 1;  // Fds cannot travel on a stream without a byte: one NUL.
  }
  return {};
}

// The message laid out for a seqpacket socket, sent so that the kernel
// tells the socket's type by its answer (send_msg_probing): sent, it was a
// seqpacket socket; EISCONN, a stream; anything else is the kernel's
// error, unless it is one that needs the type to explain it (EINVAL,
// EOPNOTSUPP), which is then asked for (SO_TYPE, SO_DOMAIN).
Step FdSender::probe(bool& done) {
  done = true;
  iovec iov{const_cast<uint8_t*>(data_), len_};
  ssize_t n = send_msg_probing(sock_, &iov, fds_, nfds_);
  if (n >= 0) {
    type_ = SOCK_SEQPACKET;
    sent_ = static_cast<size_t>(n);
    return {};
  }
  if (n == -EAGAIN) return again(POLLOUT);
  done = false;
  if (n == -EISCONN) return set_type(SOCK_STREAM);
  if (n != -EINVAL && n != -EOPNOTSUPP) return failed(static_cast<int>(-n), "sendmsg");
  int type = socket_type(sock_);
  if (type == -EAFNOSUPPORT) return failed(EAFNOSUPPORT, "sendmsg");
  if (type < 0) return failed(-type, "getsockopt");
  return set_type(type);
}

Step FdSender::step() {
  if (!layout_known()) {
    bool done = false;
    Step s = probe(done);
    if (done || s.err != 0) return s;
  }
  // Runs at least once: an empty datagram is still a message.
  bool first = sent_ == 0;
  while (first || sent_ < total()) {
    iovec iov[2];
    int count = 0;
    if (sent_ < header_len_) iov[count++] = {header_ + sent_, header_len_ - sent_};
    size_t done = data_done();
    if (done < len_ || count == 0) iov[count++] = {const_cast<uint8_t*>(data_) + done, len_ - done};
    // Fds go with the first sendmsg that sends anything, and never again.
    bool with_fds = sent_ == 0;
    ssize_t n = send_msgv(sock_, iov, count, with_fds ? fds_ : nullptr, with_fds ? nfds_ : 0);
    if (n == -EAGAIN) return again(POLLOUT);
    if (n < 0) return failed(static_cast<int>(-n), "sendmsg");
    sent_ += static_cast<size_t>(n);
    first = false;
    // Seqpacket and datagram sends are all or nothing: only a stream
    // sends part of a message, so one that did is a stream.
    if (type_ == 0 && sent_ < total()) type_ = SOCK_STREAM;
    if (type_ != SOCK_STREAM) break;
  }
  return {};
}

// ---- FdReceiver ----------------------------------------------------------

FdReceiver::FdReceiver(int sock, size_t max_bytes, size_t max_fds, Framing framing)
    : sock_(sock), max_bytes_(max_bytes), max_fds_(max_fds), framing_(framing) {}

FdReceiver::FdReceiver(UniqueFd sock, size_t max_bytes, size_t max_fds, Framing framing)
    : owned_(std::move(sock)), sock_(owned_.get()), max_bytes_(max_bytes), max_fds_(max_fds), framing_(framing) {}

Step FdReceiver::start() {
  // Raw bytes read into the caller's room take one recvmsg on every type:
  // the type is asked only if the read says nothing it could tell
  // (step_message). A frame's reads depend on it from the first byte.
  if (framing_ == Framing::kNone && room_ != nullptr) return {};
  return learn_type();
}

Step FdReceiver::learn_type() {
  type_ = socket_kind(sock_);
  if (type_ < 0) return failed(-type_, "getsockopt");
  return {};
}

bool FdReceiver::mid_message() const {
  return type_ == SOCK_STREAM && framing_ == Framing::kFrame && header_got_ > 0 && !finished_;
}

Step FdReceiver::step() {
  try {
    return step_checked();
  } catch (const std::bad_alloc&) {
    return failed(ENOMEM, "recvmsg");
  }
}

Step FdReceiver::step_checked() {
  // A raw receive moved off the caller's room (Detach) before a byte came
  // needs the type now: the reads into its own buffer depend on it.
  if (type_ == 0 && room_ == nullptr) {
    Step s = learn_type();
    if (s.err != 0) return s;
  }
  // Unknown still: raw bytes into the room, which a record and a stream
  // take alike (step_message).
  if (type_ != SOCK_STREAM) return step_message();
  return framing_ == Framing::kFrame ? step_frame() : step_raw();
}

void FdReceiver::keep(std::vector<UniqueFd>& arrived) {
  if (arrived.empty()) return;
  // Room first, so that drop_received() never allocates (it takes fds_
  // whole while unwanted_ is empty, else appends into this room); a
  // bad_alloc here leaves the fds in `arrived`, which closes them.
  if (!unwanted_.empty()) unwanted_.reserve(unwanted_.size() + fds_.size() + arrived.size());
  if (fds_.empty()) {
    fds_.swap(arrived);  // The usual case, one message's fds: no allocation.
    return;
  }
  fds_.reserve(fds_.size() + arrived.size());
  for (UniqueFd& fd : arrived) fds_.push_back(std::move(fd));
  arrived.clear();
}

void FdReceiver::drop_received() {
  dropped_ += fds_.size();
  if (unwanted_.empty()) {
    unwanted_.swap(fds_);
    return;
  }
  // unwanted_ has room for them (reserved as they arrived): no allocation.
  for (UniqueFd& fd : fds_) unwanted_.push_back(std::move(fd));
  fds_.clear();
}

Step FdReceiver::finish(RecvStatus status) {
  finished_ = true;
  status_ = status;
  if (status != RecvStatus::kOk) {
    drop_received();
    data_.clear();
    in_place_ = false;
  }
  return {};
}

Step FdReceiver::step_message() {
  RecvInfo info;
  ssize_t n;
  if (room_ != nullptr) {
    // Straight into the caller's room; MSG_TRUNC tells the real length.
    n = recv_msg(sock_, room_, max_bytes_, max_fds_, true, info);
    if (n == -EAGAIN) return again(POLLIN);
    if (n < 0) return failed(static_cast<int>(-n), "recvmsg");
    keep(info.fds);
    in_place_ = true;
    placed_ = static_cast<size_t>(n);
  } else if (max_bytes_ <= kMessageRoom) {
    // Straight into this thread's room; MSG_TRUNC tells the real length.
    thread_local std::vector<uint8_t> room;
    if (room.size() < kMessageRoom) room.resize(kMessageRoom);
    n = recv_msg(sock_, room.data(), max_bytes_, max_fds_, true, info);
    if (n == -EAGAIN) return again(POLLIN);
    if (n < 0) return failed(static_cast<int>(-n), "recvmsg");
    keep(info.fds);
    data_.assign(room.data(), room.data() + n);
  } else {
    ssize_t len = peek_message_len(sock_);
    if (len == -EAGAIN) return again(POLLIN);
    if (len < 0) return failed(static_cast<int>(-len), "recvmsg");
    // Another reader of the same socket may take this record first; the
    // next one is then measured by MSG_TRUNC and, if longer, reported as such.
    data_.resize(std::min(static_cast<size_t>(len), max_bytes_));
    n = recv_msg(sock_, data_.data(), data_.size(), max_fds_, true, info);
    if (n == -EAGAIN) return again(POLLIN);
    if (n < 0) return failed(static_cast<int>(-n), "recvmsg");
    keep(info.fds);
    data_.resize(static_cast<size_t>(n));
  }
  message_len_ = info.full_len;
  if (info.ctrunc) return finish(RecvStatus::kCtrunc);
  // Only a record reports more than it copied: a stream read (a raw one of
  // a type not asked) never exceeds max_bytes.
  if (info.full_len > max_bytes_) return finish(RecvStatus::kTrunc);
  if (n == 0 && fds_.empty()) {
    // Nothing came: the peer's shutdown (seqpacket, or a stream read raw
    // without its type), or an empty datagram. Only this needs the type.
    if (type_ == 0) {
      Step s = learn_type();
      if (s.err != 0) {
        in_place_ = false;
        return s;
      }
    }
    if (type_ != SOCK_DGRAM) return finish(RecvStatus::kEof);
  }
  return finish(RecvStatus::kOk);
}

Step FdReceiver::step_raw() {
  int queued = readable_bytes(sock_);
  if (queued < 0) return failed(-queued, "ioctl");
  data_.resize(std::min(max_bytes_, std::max(static_cast<size_t>(queued), kMinRawRead)));
  RecvInfo info;
  ssize_t n = recv_msg(sock_, data_.data(), data_.size(), max_fds_, false, info);
  if (n == -EAGAIN) return again(POLLIN);
  if (n < 0) return failed(static_cast<int>(-n), "recvmsg");
  keep(info.fds);
  data_.resize(static_cast<size_t>(n));
  message_len_ = static_cast<size_t>(n);
  if (info.ctrunc) return finish(RecvStatus::kCtrunc);
  return finish(n == 0 ? RecvStatus::kEof : RecvStatus::kOk);
}

// Reads up to len - got bytes at buf + got. Fds may only arrive on the
// read that starts a frame; anywhere else they are a protocol error.
Step FdReceiver::read_into(uint8_t* buf, size_t len, size_t& got, bool at_frame_start) {
  RecvInfo info;
  ssize_t n = recv_msg(sock_, buf + got, len - got, max_fds_, false, info);
  if (n == -EAGAIN) return again(POLLIN);
  if (n < 0) return failed(static_cast<int>(-n), "recvmsg");
  bool stray = !info.fds.empty() && !at_frame_start;
  keep(info.fds);
  if (stray) return finish(RecvStatus::kBadFrame);
  if (info.ctrunc) {
    // Drop what came now; read the rest of the frame so the stream stays
    // in step, and report the truncation at its end.
    drop_received();
    pending_ = RecvStatus::kCtrunc;
  }
  if (n == 0) return finish(at_frame_start ? RecvStatus::kEof : RecvStatus::kShortFrame);
  got += static_cast<size_t>(n);
  // EAGAIN with no events to wait for means "progress made, read again";
  // every other Step (done, error, wait) goes straight back to the caller.
  return again(0);
}

bool FdReceiver::read_header_done(Step& s) {
  s = read_into(header_, kFrameHeaderSize, header_got_, header_got_ == 0);
  if (s.err != EAGAIN || s.events != 0) return true;
  if (header_got_ < kFrameHeaderSize) return false;
  if (get_u32(header_) != kFrameMagic) {
    s = finish(RecvStatus::kBadFrame);
    return true;
  }
  message_len_ = get_u32(header_ + 4);
  if (message_len_ > max_bytes_ && pending_ == RecvStatus::kOk) pending_ = RecvStatus::kTrunc;
  // A frame that will be reported as an error is read and thrown away in
  // bounded pieces, so the next frame starts where it should.
  discard_ = pending_ != RecvStatus::kOk;
  if (discard_) data_.resize(std::min(message_len_, kReadChunk));
  have_length_ = true;
  return false;
}

Step FdReceiver::step_frame() {
  Step s;
  while (!have_length_) {
    if (read_header_done(s)) return s;
  }
  while (body_got_ < message_len_) {
    if (discard_) {
      size_t piece = 0;
      s = read_into(data_.data(), std::min(data_.size(), message_len_ - body_got_), piece, false);
      body_got_ += piece;
    } else {
      // Room for the next piece only: the buffer follows the bytes.
      data_.resize(body_got_ + std::min(message_len_ - body_got_, kReadChunk));
      s = read_into(data_.data(), data_.size(), body_got_, false);
    }
    if (s.err != EAGAIN || s.events != 0) return s;
  }
  return finish(pending_);
}

}  // namespace lu
