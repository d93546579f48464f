// libFuzzer target over the fd-passing receive path (native/fdpass.cc, no
// N-API): fuzzed bytes, split into sends with fds attached, go through a
// socketpair into FdReceiver, which must never crash, never leak an fd,
// never hand back more than it was asked for, and keep every fd it does not
// hand back for its caller to close (the thread that closes a peer's file
// may block).
//
// Input layout: byte 0 picks the socket type and framing, byte 1 max_fds,
// bytes 2-4 max_bytes; the rest is a list of chunks, each a length byte, an
// fd-count byte and that many bytes of payload. Build and run: see
// CONTRIBUTING.md ("Hardening checks").
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <dirent.h>

#include "../native/fdpass.h"

namespace {

int CountOpenFds() {
  int n = 0;
  DIR* dir = opendir("/proc/self/fd");
  while (dirent* entry = readdir(dir)) n += entry->d_name[0] != '.';
  closedir(dir);
  return n;
}

// Sends the chunks (without blocking: what does not fit is dropped, as a
// peer that stops writing would leave it), each with `fds` copies of fd 0.
void SendChunks(int sock, int type, const uint8_t* data, size_t size) {
  int fds[lu::kMaxFdsPerMessage];
  for (int& fd : fds) fd = STDIN_FILENO;
  while (size >= 2) {
    size_t len = data[0];
    size_t nfds = data[1] % 8;
    data += 2;
    size -= 2;
    if (len > size) len = size;
    // A stream needs a byte to carry fds.
    if (type == SOCK_STREAM && len == 0) nfds = 0;
    if (lu::send_msg(sock, data, len, fds, nfds) < 0) break;
    data += len;
    size -= len;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 5) return 0;
  static const int kTypes[] = {SOCK_STREAM, SOCK_SEQPACKET, SOCK_DGRAM};
  int type = kTypes[data[0] % 3];
  auto framing = (data[0] & 0x10) ? lu::Framing::kNone : lu::Framing::kFrame;
  size_t max_fds = data[1] % (lu::kMaxFdsPerMessage + 1);
  size_t max_bytes = (size_t{data[2]} << 16) | (size_t{data[3]} << 8) | data[4];
  int before = CountOpenFds();

  int pair[2];
  if (lu::unix_socket_pair(type, pair) < 0) abort();
  SendChunks(pair[0], type, data + 5, size - 5);
  ::shutdown(pair[0], SHUT_WR);  // EOF after the chunks: a receive always ends.
  ::close(pair[0]);

  // Receive messages until EOF or an error, as a caller looping would.
  for (int i = 0; i < 64; ++i) {
    lu::FdReceiver receiver(lu::UniqueFd(lu::dup_cloexec(pair[1])), max_bytes, max_fds, framing);
    lu::Step s = receiver.start();
    if (s.err) abort();
    do {
      s = receiver.step();
    } while (s.err == EAGAIN && s.events == 0);
    if (s.err) break;  // EAGAIN waiting for POLLIN: a datagram socket with nothing left.
    if (receiver.status() == lu::RecvStatus::kOk) {
      if (receiver.data().size() > max_bytes || receiver.fds().size() > max_fds) abort();
    } else if (!receiver.fds().empty() || !receiver.data().empty()) {
      abort();  // A refused message hands nothing over.
    }
    // Every fd it did not hand over is kept for the caller to close, and
    // counted: none is closed behind the caller's back, none is lost.
    if (receiver.unwanted().size() != receiver.dropped_fds()) abort();
    if (receiver.status() != lu::RecvStatus::kOk && receiver.status() != lu::RecvStatus::kTrunc &&
        receiver.status() != lu::RecvStatus::kCtrunc) {
      break;  // EOF, or the stream is out of step.
    }
  }
  ::close(pair[1]);
  // Every fd that arrived was owned by the receiver and is closed with it.
  if (CountOpenFds() != before) abort();
  return 0;
}
