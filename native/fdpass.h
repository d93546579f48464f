// fdpass.h - SCM_RIGHTS over Unix sockets, as thin syscall wrappers with no
// N-API in them: every function returns a result or -errno.
//
// The send and receive operations are small state machines (FdSender,
// FdReceiver) whose step() never blocks: it makes progress with MSG_DONTWAIT
// and answers -EAGAIN when the socket is not ready. The caller decides how
// to wait: poll() for the synchronous forms, a uv_poll_t on the event loop
// for the Promise forms. Nothing here changes the fd's O_NONBLOCK flag,
// because that flag lives in the open file description that Node (or
// another process) may share.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "unique_fd.h"

namespace lu {

// SCM_MAX_FD in the kernel: the most fds one sendmsg may carry.
inline constexpr size_t kMaxFdsPerMessage = 253;

// Stream frame header: magic "LUFD" then the payload length, both u32
// big-endian. The fds ride on the header's first byte (see fdpass.cc).
inline constexpr size_t kFrameHeaderSize = 8;
inline constexpr uint32_t kFrameMagic = 0x4c554644;
// Room a datagram or seqpacket record is read into directly (one recvmsg,
// MSG_TRUNC telling the real length) when maxBytes is no more than this; a
// larger maxBytes peeks at the length first, so memory follows what arrived.
// The room is one buffer per thread, allocated on its first receive.
inline constexpr size_t kMessageRoom = 65536;
// Bytes per read of a frame body. A frame's buffer grows by at most this
// much per read, as bytes arrive: the header's claimed length is never
// allocated up front, so a peer cannot make the receiver allocate what it
// does not send. A refused frame is skipped in pieces of this size.
inline constexpr size_t kReadChunk = 65536;
// A raw stream read takes what is queued, and at least this much room.
inline constexpr size_t kMinRawRead = 4096;
// Control room beyond the fds, for what the kernel adds before
// SCM_RIGHTS when the receiving socket asks for it (SO_PASSCRED,
// SO_PASSPIDFD, SO_TIMESTAMP, SO_PASSSEC): without it, those would take the
// fds' room and the fds would be dropped.
inline constexpr size_t kExtraControl = 256;

// How bytes on a SOCK_STREAM socket are split into messages.
enum class Framing {
  kFrame = 0,  // Each message is one length-prefixed frame (the default).
  kNone = 1,   // Raw bytes: one recvmsg per receive, as the kernel hands them.
};

// getsockopt(SO_TYPE) and (SO_DOMAIN): SOCK_STREAM, SOCK_SEQPACKET or
// SOCK_DGRAM of an AF_UNIX socket, -EAFNOSUPPORT for another family.
int socket_type(int fd);

// getsockopt(SO_TYPE) alone: what a receive must know to read a frame
// (a stream's header first, a record whole). One syscall, and no family
// check: the kernel lets a TCP or UDP socket take SCM_RIGHTS and drops the
// fds, so a send, where that would lose them, refuses such sockets itself
// (FdSender::probe); a receive from one gets no fds to lose.
int socket_kind(int fd);

// fcntl(F_DUPFD_CLOEXEC): a private fd for the same socket, so a pending
// operation never acts on an fd number the caller closed and reused.
int dup_cloexec(int fd);

// fcntl(F_SETFD): sets or clears FD_CLOEXEC / whether it is set (1 or 0).
int set_cloexec(int fd, bool on);
int get_cloexec(int fd);

// setsockopt(SOL_SOCKET, SO_PASSRIGHTS): whether the kernel lets peers
// send this socket fds at all (Linux 6.16+; off: a sender of SCM_RIGHTS
// gets EPERM, and sockets accepted from a listener inherit the setting).
// Returns 1 when set, 0 when the kernel does not know the option
// (ENOPROTOOPT), or -errno.
int set_pass_rights(int fd, bool on);

// recv(MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT) of nothing: the length of the
// next datagram or seqpacket record, without taking it.
ssize_t peek_message_len(int fd);

// ioctl(FIONREAD): the bytes queued for reading on a stream socket.
int readable_bytes(int fd);

// poll() one fd for `events`; timeout_ms < 0 waits forever. Returns the
// revents (0 on timeout). Retries EINTR with the time left.
int wait_fd(int fd, short events, int timeout_ms);

// A readiness set (epoll, close-on-exec) for fds watched over and over:
// each is added once and re-armed with one epoll_ctl per wait, where a
// watcher made per wait costs a dup, a libuv handle's set-up and its close.
// Entries are one-shot: an fd reported is not reported again until re-armed,
// so a socket with messages waiting that nobody waits for never wakes the
// set's reader.
int ready_set_open();

// Arms `fd` in `set` for one report of readable or hung up, tagged `id`:
// the first time adds it (`added` false), later re-arms it. -errno on failure.
int ready_set_arm(int set, int fd, uint64_t id, bool added);

// Takes `fd` out of `set`: before the fd is closed, for the set is keyed by
// the open file and a dup left open elsewhere would keep the entry alive.
void ready_set_remove(int set, int fd);

// The ids of up to `max` fds reported since they were armed, without
// waiting; their count, or -errno.
int ready_set_take(int set, uint64_t* ids, int max);

// socketpair(AF_UNIX, type | SOCK_CLOEXEC): fills both ends.
int unix_socket_pair(int type, int fds[2]);

// socket(AF_UNIX, type | SOCK_CLOEXEC) then bind() to `path`; a leading '@'
// names the abstract namespace. Stream and seqpacket sockets also listen().
int unix_bind(int type, const std::string& path);

// socket(AF_UNIX, type | SOCK_CLOEXEC) then connect() to `path` ('@' =
// abstract).
int unix_connect(int type, const std::string& path);

// accept4(SOCK_CLOEXEC) on a listening socket.
int unix_accept(int fd);

// pipe2(O_CLOEXEC): fills the read and write ends.
int pipe_cloexec(int fds[2]);

// One sendmsg(MSG_NOSIGNAL | MSG_DONTWAIT) of `len` bytes with `nfds` fds
// attached as SCM_RIGHTS (none when nfds == 0). Returns the bytes sent.
ssize_t send_msg(int fd, const uint8_t* data, size_t len, const int* fds, size_t nfds);
// The same, of the bytes of `iovcnt` pieces (at most 2).
ssize_t send_msgv(int fd, const struct iovec* iov, int iovcnt, const int* fds, size_t nfds);
// The same, of one piece, sent so that the kernel's answer tells the
// socket's type without a syscall more: sent by a connected seqpacket
// socket only; a stream refuses it with EISCONN (or EOPNOTSUPP), a
// datagram or a non-Unix socket with EINVAL or EOPNOTSUPP (see fdpass.cc).
ssize_t send_msg_probing(int fd, const struct iovec* iov, const int* fds, size_t nfds);

// What one recvmsg returned besides the byte count.
struct RecvInfo {
  std::vector<UniqueFd> fds;  // Owned until handed on: never leaked.
  bool ctrunc = false;        // MSG_CTRUNC: the kernel dropped fds.
  size_t full_len = 0;        // With MSG_TRUNC: the datagram's real length.
};

// One recvmsg(MSG_CMSG_CLOEXEC | MSG_DONTWAIT [| MSG_TRUNC]) into `buf`.
// Returns the bytes received. The control buffer always has room for the
// most fds one message can carry (kMaxFdsPerMessage, and kExtraControl),
// whatever `max_fds` says: fds that do not fit are released by the kernel
// in the calling thread (the last close of a file runs when the syscall
// returns), and a peer's file can make that close block (a TCP socket
// lingering on unsent data). Taken in, they are the caller's to close
// where it chooses. Every fd the control data carries is owned on return:
// the SCM_RIGHTS ones in `info.fds` (more than `max_fds` sets `ctrunc`),
// any other (SCM_PIDFD, whose close never blocks) closed at once.
ssize_t recv_msg(int fd, uint8_t* buf, size_t len, size_t max_fds, bool want_trunc, RecvInfo& info);

// Outcome of a step: done, would block on `events`, or failed with errno.
struct Step {
  int err = 0;         // 0, EAGAIN (wait for `events`), or an errno.
  short events = 0;    // POLLIN or POLLOUT when err == EAGAIN.
  const char* syscall = "";
};

// Sends one message (start() and step() never throw: running out of memory
// is ENOMEM): on a stream, header + data + fds in the first
// sendmsg and the remaining bytes without fds; on seqpacket and datagram
// sockets, the whole message in one sendmsg.
//
// It acts on the numbers and the bytes it is given, without copying them:
// a caller that is done before it returns (a synchronous send) passes its
// own, and `fds` need only live as long as the call. One that goes on
// waiting after its caller moved on gives it its own copies first
// (set_socket, set_fds, own_bytes).
class FdSender {
 public:
  FdSender(int sock, const uint8_t* data, size_t len, const int* fds, size_t nfds, Framing framing);
  // Call once before step(). No syscall: the socket's type, where the
  // message's layout depends on it, is learnt from the first sendmsg.
  Step start();
  Step step();
  // Bytes sent so far, the frame header included.
  size_t bytes_sent() const { return sent_; }
  // Part of a stream message is sent and the rest is not.
  bool mid_message() const;
  // Whether the fds are sent already (they ride on the first sendmsg).
  bool fds_sent() const { return sent_ > 0; }
  int socket() const { return sock_; }
  const int* fds() const { return fds_; }
  size_t fd_count() const { return nfds_; }
  void set_socket(int sock) { sock_ = sock; }
  // Acts on `fds` (copies of the same count) from now on.
  void set_fds(std::vector<int> fds) {
    owned_fds_ = std::move(fds);
    fds_ = owned_fds_.data();
  }
  // Copies the bytes not yet sent into storage of its own (std::bad_alloc).
  void own_bytes();

 private:
  size_t total() const { return header_len_ + skipped_ + len_; }
  // Bytes of data_ sent so far.
  size_t data_done() const;
  // Whether the bytes to send are known: the type is, or does not matter.
  bool layout_known() const;
  // Lays the message out for a socket of `type` (a stream: the header).
  Step set_type(int type);
  // Sends the message as on a seqpacket socket if it is one (`done`), else
  // learns the type from the kernel's refusal (see send_msg_probing).
  Step probe(bool& done);

  int sock_;
  const uint8_t* data_;  // The bytes not dropped by own_bytes, len_ of them.
  size_t len_;
  size_t skipped_ = 0;   // Bytes sent before own_bytes dropped them.
  std::vector<uint8_t> owned_;
  const int* fds_;  // The caller's, or owned_fds_.
  size_t nfds_;
  std::vector<int> owned_fds_;
  Framing framing_;
  uint8_t header_[kFrameHeaderSize] = {};
  size_t header_len_ = 0;
  int type_ = 0;  // 0 until learnt.
  size_t sent_ = 0;
};

// Why a receive ended without a normal message.
enum class RecvStatus {
  kOk = 0,
  kEof = 1,           // Orderly shutdown before any byte of a message.
  kCtrunc = 2,        // MSG_CTRUNC: fds were dropped; the rest were closed.
  kTrunc = 3,         // Datagram or frame longer than max_bytes (skipped).
  kBadFrame = 4,      // Stream bytes that are not a frame, or fds mid-frame.
  kShortFrame = 5,    // EOF inside a frame.
};

// Receives one message (one frame on a framed stream). start() and step()
// never throw: running out of memory is ENOMEM. Memory follows the bytes
// that arrive, never a length a peer claims: a datagram's buffer is its
// real length (peeked) capped at max_bytes, a frame's grows kReadChunk at
// a time. Fds that arrive and are not to be handed over (more than
// max_fds, or with a refused message) are not closed here but kept in
// unwanted(): closing a peer's file can block, and the caller decides on
// which thread that happens.
//
// It reads from the number it is given (`sock`, not owned), or from one it
// owns (the UniqueFd form); set_socket moves it to a copy mid-receive.
class FdReceiver {
 public:
  FdReceiver(int sock, size_t max_bytes, size_t max_fds, Framing framing);
  FdReceiver(UniqueFd sock, size_t max_bytes, size_t max_fds, Framing framing);
  // A datagram or seqpacket record is read straight into `room` (at least
  // max_bytes long, the caller's) instead of data(): in_place() then says
  // so, and placed() how many bytes are there. nullptr goes back to data().
  void set_room(uint8_t* room) { room_ = room; }
  bool in_place() const { return in_place_; }
  size_t placed() const { return placed_; }
  Step start();
  int socket() const { return sock_; }
  void set_socket(int sock) { sock_ = sock; }
  Step step();
  RecvStatus status() const { return status_; }
  std::vector<uint8_t>& data() { return data_; }
  std::vector<UniqueFd>& fds() { return fds_; }
  size_t dropped_fds() const { return dropped_; }
  // The fds that arrived and will not be handed over; closed with the
  // receiver unless taken.
  std::vector<UniqueFd>& unwanted() { return unwanted_; }
  // Everything received so far becomes unwanted (the receive failed).
  void drop_received();
  size_t message_len() const { return message_len_; }
  // Stopped after reading part of a frame (an error or an abandoned wait).
  bool mid_message() const;
  // The stream is no longer at a frame boundary this side can find (a bad
  // frame, or fds mid-frame): only closing it is safe.
  bool out_of_step() const { return status_ == RecvStatus::kBadFrame; }

 private:
  Step step_checked();
  Step step_message();
  Step step_raw();
  // getsockopt(SO_TYPE) into type_.
  Step learn_type();
  Step step_frame();
  bool read_header_done(Step& s);
  Step read_into(uint8_t* buf, size_t len, size_t& got, bool at_frame_start);
  Step finish(RecvStatus status);
  void keep(std::vector<UniqueFd>& arrived);

  UniqueFd owned_;
  int sock_;
  size_t max_bytes_;
  size_t max_fds_;
  Framing framing_;
  int type_ = 0;  // 0 until learnt (a raw receive into the room may never ask).
  RecvStatus status_ = RecvStatus::kOk;
  RecvStatus pending_ = RecvStatus::kOk;  // Reported once the frame is read.
  bool finished_ = false;
  bool discard_ = false;
  uint8_t header_[kFrameHeaderSize] = {};
  size_t header_got_ = 0;
  bool have_length_ = false;
  size_t body_got_ = 0;
  size_t message_len_ = 0;
  size_t dropped_ = 0;
  std::vector<uint8_t> data_;
  uint8_t* room_ = nullptr;
  bool in_place_ = false;
  size_t placed_ = 0;
  std::vector<UniqueFd> fds_;
  std::vector<UniqueFd> unwanted_;
};

}  // namespace lu
