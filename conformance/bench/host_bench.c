/*
 * host_bench - the plain-C side of the benchmark's host cases: the same
 * syscalls the Node binding makes, in a tight loop with nothing between the
 * program and the kernel, on calls every Linux answers (no LUO needed).
 *
 * Compiled by the benchmark driver on the host (cc -O2) and run as a server
 * so that node's rounds and C's interleave in one run: each line on stdin,
 * "CASE COUNT", makes COUNT calls of CASE and is answered with the
 * nanoseconds they took (CLOCK_MONOTONIC, like process.hrtime). Cases:
 *   seals   fcntl(F_GET_SEALS) on a memfd            (memfd.getSealsSync)
 *   fstat   fstat() on a memfd         (node's fs.fstat, the Promise anchor)
 *   enotty  LIVEUPDATE_SESSION_RETRIEVE_FD on a memfd, which the kernel
 *           refuses with ENOTTY after the same user/kernel round trip
 *   fdpass  one memfd sent with one byte over a seqpacket pair (sendmsg,
 *           SCM_RIGHTS) and received (recvmsg, MSG_CMSG_CLOEXEC):
 *           sendFdsSync + recvFdsSync; the received fds are closed between
 *           timed batches (pass_fds), and only the batches are answered
 * "ready" is printed once everything is made; EOF ends it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "liveupdate/abi.h"

#define PROGRAM "host_bench"
/* Round trips timed together in the fdpass case; the node side uses the same. */
#define PASS_BATCH 100
#include "bench.h"

static void get_seals(int memfd) {
  if (fcntl(memfd, F_GET_SEALS) < 0) die("F_GET_SEALS");
}

static void stat_fd(int memfd) {
  struct stat st;
  if (fstat(memfd, &st) < 0) die("fstat");
}

static void refused_ioctl(int memfd) {
  struct lu_fd_args args = {.size = sizeof(args), .fd = -1, .token = 1};
  if (ioctl(memfd, LU_IOC_SESSION_RETRIEVE_FD, &args) == 0 || errno != ENOTTY) die("RETRIEVE_FD on a memfd (expected ENOTTY)");
}

static void send_fd(int sock, int fd) {
  char byte = 'x';
  struct iovec iov = {.iov_base = &byte, .iov_len = 1};
  union {
    struct cmsghdr header;
    char space[CMSG_SPACE(sizeof(int))];
  } control;
  memset(&control, 0, sizeof(control));
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space, .msg_controllen = sizeof(control.space)};
  struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
  if (sendmsg(sock, &msg, MSG_NOSIGNAL) != 1) die("sendmsg");
}

static int recv_fd(int sock) {
  char byte;
  struct iovec iov = {.iov_base = &byte, .iov_len = 1};
  union {
    struct cmsghdr header;
    char space[CMSG_SPACE(sizeof(int))];
  } control;
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space, .msg_controllen = sizeof(control.space)};
  if (recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) != 1) die("recvmsg");
  struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
  if (cmsg == NULL || cmsg->cmsg_type != SCM_RIGHTS) {
    errno = EBADMSG;
    die("recvmsg: no fd");
  }
  int fd;
  memcpy(&fd, CMSG_DATA(cmsg), sizeof(int));
  return fd;
}

/*
 * `count` round trips, timed in batches of PASS_BATCH: the fds received in a
 * batch are closed after it, untimed, as the node side closes its own. The
 * close is no part of a send and a receive, and node's fs.closeSync costs
 * more than close(2) by itself. Returns the ns spent in the batches.
 */
static int64_t pass_fds(const int pair[2], int memfd, long count) {
  int held[PASS_BATCH];
  int64_t spent = 0;
  for (long done = 0; done < count; done += PASS_BATCH) {
    long n = count - done < PASS_BATCH ? count - done : PASS_BATCH;
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
      send_fd(pair[0], memfd);
      held[i] = recv_fd(pair[1]);
    }
    spent += now_ns() - t0;
    for (long i = 0; i < n; i++) close(held[i]);
  }
  return spent;
}

int main(void) {
  int memfd = memfd_create("host-bench", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (memfd < 0) die("memfd_create");
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) die("socketpair");
  fputs("ready\n", stdout);
  fflush(stdout);
  char line[64], name[16];
  long count;
  while (fgets(line, sizeof(line), stdin) != NULL) {
    if (sscanf(line, "%15s %ld", name, &count) != 2 || count <= 0) {
      fprintf(stderr, "host_bench: bad command: %s", line);
      return 2;
    }
    int64_t t0 = now_ns();
    int64_t spent = -1; /* Set by a case that times itself. */
    if (strcmp(name, "seals") == 0) for (long i = 0; i < count; i++) get_seals(memfd);
    else if (strcmp(name, "fstat") == 0) for (long i = 0; i < count; i++) stat_fd(memfd);
    else if (strcmp(name, "enotty") == 0) for (long i = 0; i < count; i++) refused_ioctl(memfd);
    else if (strcmp(name, "fdpass") == 0) spent = pass_fds(pair, memfd, count);
    else {
      fprintf(stderr, "host_bench: unknown case %s\n", name);
      return 2;
    }
    if (spent < 0) spent = now_ns() - t0;
    printf("%lld\n", (long long)spent);
    fflush(stdout);
  }
  return 0;
}
