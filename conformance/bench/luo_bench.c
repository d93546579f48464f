/*
 * luo_bench - the plain-C side of `npm run bench`: the same LUO ioctls the
 * Node binding makes, with nothing between the program and the kernel, so
 * that node/C ratios measured in one guest run show what the binding costs.
 *
 * Built static by the benchmark driver (gcc -O2 -static) and placed in the
 * guest image. Structures and request numbers come from the project's ABI
 * header, exactly as the addon's.
 *
 * Modes (results are one JSON object on stdout):
 *   serve-preserve N ROUNDS PREFIX CHUNK
 *       ROUNDS sessions PREFIX0.. of N one-page memfds each, preserved chunk
 *       by chunk on the driver's command (see serve_preserve); only the
 *       PRESERVE_FD ioctls are timed. The sessions are then held open (they
 *       must live until the kexec) until stdin's EOF.
 *   serve-retrieve N ROUNDS PREFIX CHUNK
 *       The same sessions in the next kernel, RETRIEVE_FD chunk by chunk.
 *   preserve-session NAME N
 *       One session of N one-page memfds (untimed), held like the above.
 *   preserve-large BYTES ROUNDS
 *       Per round a fresh memfd of BYTES, every page written, preserved twice
 *       in new sessions (each timed, then closed: unpreserved).
 *   preserve-fd FD
 *       The same two preserves of a memfd another process wrote (inherited).
 *   blackout-agent SESSION N
 *       Retrieves SESSION's N files, timing each step (see blackout_agent).
 *   machine
 *       The clock tick and the hypervisor's signature (see machine).
 *   As pid 1 (the kernel runs it with rdinit=): see init_main().
 */
#define _GNU_SOURCE
#include <errno.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "liveupdate/abi.h"

#define PROGRAM "luo_bench"
#include "bench.h"
#include "system-disk.h"

/* Where pid 1 leaves its measurement for the node runner that follows it. */
#define INIT_RESULT "/run/luo-bench-init.json"
/* Where the blackout agent pid 1 starts writes its own (its stdout). */
#define AGENT_RESULT "/run/luo-bench-agent.json"
/* The blackout sessions (each side's, preserved the stage before) and their size. */
#define C_BLACKOUT_SESSION "bench-c-blackout"
#define NODE_BLACKOUT_SESSION "bench-node-blackout"
#define BLACKOUT_FILES 100
/* Which agent pid 1 starts in which stage (the kernel parameter the test bed counts stages with). */
#define STAGE_PARAM "lu.stage"
#define C_STAGE 3
#define NODE_STAGE 4
/* This program in the guest, node, and the node agent (bench/blackout-agent.js). */
#define SELF "/lu/bench/luo_bench"
#define NODE "/usr/bin/node"
#define NODE_AGENT "/lu/bench/blackout-agent.js"
/* The node runner pid 1 hands over to. */
#define NEXT_INIT "/init"
#define PAGE 4096

static int xioctl(int fd, unsigned long request, void *arg) {
  int rc;
  do rc = ioctl(fd, request, arg);
  while (rc < 0 && errno == EINTR);
  return rc;
}

static int open_device(void) {
  int fd = open(LU_DEVICE_PATH, O_RDWR | O_CLOEXEC);
  if (fd < 0) die("open " LU_DEVICE_PATH);
  return fd;
}

/* CREATE_SESSION or RETRIEVE_SESSION; the session fd, or -errno. */
static int session_call(int device, unsigned long request, const char *name) {
  struct lu_session_args args = {.size = sizeof(args), .fd = -1};
  size_t len = strnlen(name, sizeof(args.name) - 1); /* NUL-terminated: 63 bytes at most */
  memcpy(args.name, name, len);
  return xioctl(device, request, &args) < 0 ? -errno : args.fd;
}

static int preserve_fd(int session, int fd, uint64_t token) {
  struct lu_fd_args args = {.size = sizeof(args), .fd = fd, .token = token};
  return xioctl(session, LU_IOC_SESSION_PRESERVE_FD, &args);
}

static int retrieve_fd(int session, uint64_t token) {
  struct lu_fd_args args = {.size = sizeof(args), .fd = -1, .token = token};
  return xioctl(session, LU_IOC_SESSION_RETRIEVE_FD, &args) < 0 ? -1 : args.fd;
}

static int finish_session(int session) {
  struct lu_finish_args args = {.size = sizeof(args), .reserved = 0};
  return xioctl(session, LU_IOC_SESSION_FINISH, &args);
}

/* A memfd of `bytes`, every page written, so preserving it pins real pages. */
static int filled_memfd(const char *name, int64_t bytes) {
  static char chunk[1 << 20];
  if (chunk[0] == 0) memset(chunk, 0x5a, sizeof(chunk));
  int fd = memfd_create(name, MFD_CLOEXEC);
  if (fd < 0) die("memfd_create");
  for (int64_t off = 0; off < bytes;) {
    size_t len = bytes - off < (int64_t)sizeof(chunk) ? (size_t)(bytes - off) : sizeof(chunk);
    ssize_t n = pwrite(fd, chunk, len, off);
    if (n <= 0) die("pwrite");
    off += n;
  }
  return fd;
}

/* A session of `n` one-page memfds (tokens 1..n); untimed. */
static int preserved_session(int device, const char *name, int n) {
  int session = session_call(device, LU_IOC_CREATE_SESSION, name);
  if (session < 0) { errno = -session; die("CREATE_SESSION"); }
  for (int i = 0; i < n; i++) {
    int fd = filled_memfd("luo-bench-session", PAGE);
    if (preserve_fd(session, fd, (uint64_t)i + 1) < 0) die("PRESERVE_FD");
    close(fd);
  }
  return session;
}

static void print_rounds(const char *key, const double *values, int rounds) {
  printf("\"%s\":[", key);
  for (int r = 0; r < rounds; r++) printf("%s%.3f", r ? "," : "", values[r]);
  printf("]");
}

/* Session fds must stay open until the kexec: wait for the parent to let go. */
static int hold(void) {
  char byte;
  while (read(0, &byte, 1) > 0 || errno == EINTR) {}
  return 0;
}

static int preserve_session(const char *name, int n) {
  int device = open_device();
  preserved_session(device, name, n);
  close(device);
  printf("{\"n\":%d}\n", n);
  fflush(stdout);
  return hold();
}

/* PREFIX<r>: created (outgoing) or retrieved (incoming); dies on failure. */
static int named_session(int device, unsigned long request, const char *prefix, int r) {
  char name[LU_SESSION_NAME_SIZE];
  snprintf(name, sizeof(name), "%s%d", prefix, r);
  int session = session_call(device, request, name);
  if (session < 0) { errno = -session; die(name); }
  return session;
}

/* One command from the driver (any line): 0 at EOF. */
static int next_command(void) {
  char line[64];
  return fgets(line, sizeof(line), stdin) != NULL;
}

static void answer(const char *text) {
  fputs(text, stdout);
  fflush(stdout);
}

static void answer_ns(int64_t ns) {
  printf("%lld\n", (long long)ns);
  fflush(stdout);
}

/*
 * The small cases are served chunk by chunk so that the driver can
 * interleave its own chunks with these: both sides are then timed within the
 * same few milliseconds of a busy machine's life. Everything is made first
 * (untimed); "ready"; then each line on stdin does the next CHUNK calls of
 * round-major order (a chunk never spans two sessions) and is answered with
 * the nanoseconds those ioctls took.
 */
static int serve_preserve(int n, int rounds, const char *prefix, int chunk) {
  int device = open_device();
  int *sessions = calloc(rounds, sizeof(int));
  int *fds = calloc((size_t)n * rounds, sizeof(int));
  for (int r = 0; r < rounds; r++) {
    sessions[r] = named_session(device, LU_IOC_CREATE_SESSION, prefix, r);
    for (int i = 0; i < n; i++) fds[r * n + i] = filled_memfd("luo-bench-small", PAGE);
  }
  close(device); /* one owner at a time: node may open the device now */
  answer("ready\n");
  for (int done = 0; done < n * rounds && next_command();) {
    int r = done / n, i = done % n, end = i + chunk < n ? i + chunk : n;
    int64_t t0 = now_ns();
    for (int k = i; k < end; k++)
      if (preserve_fd(sessions[r], fds[r * n + k], (uint64_t)k + 1) < 0) die("PRESERVE_FD");
    int64_t ns = now_ns() - t0;
    for (int k = i; k < end; k++) close(fds[r * n + k]); /* the kernel holds its own references */
    answer_ns(ns);
    done += end - i;
  }
  return hold(); /* the sessions must live until the kexec */
}

static int serve_retrieve(int n, int rounds, const char *prefix, int chunk) {
  int device = open_device();
  int *sessions = calloc(rounds, sizeof(int));
  int *fds = calloc(n, sizeof(int));
  for (int r = 0; r < rounds; r++) sessions[r] = named_session(device, LU_IOC_RETRIEVE_SESSION, prefix, r);
  close(device);
  answer("ready\n");
  for (int done = 0; done < n * rounds && next_command();) {
    int r = done / n, i = done % n, end = i + chunk < n ? i + chunk : n;
    int64_t t0 = now_ns();
    for (int k = i; k < end; k++)
      if ((fds[k] = retrieve_fd(sessions[r], (uint64_t)k + 1)) < 0) die("RETRIEVE_FD");
    int64_t ns = now_ns() - t0;
    if (end == n) { /* the session's last chunk: finish it (untimed) */
      if (finish_session(sessions[r]) < 0) die("FINISH");
      for (int k = 0; k < n; k++) close(fds[k]);
      close(sessions[r]);
    }
    answer_ns(ns);
    done += end - i;
  }
  return 0;
}

/* One PRESERVE_FD of `fd` in a new session, timed; the session is closed after (unpreserves). */
static double preserve_once_ms(int device, int fd) {
  int session = session_call(device, LU_IOC_CREATE_SESSION, "bench-c-large");
  if (session < 0) { errno = -session; die("CREATE_SESSION"); }
  int64_t t0 = now_ns();
  if (preserve_fd(session, fd, 1) < 0) die("PRESERVE_FD");
  double ms = (now_ns() - t0) / 1e6;
  close(session);
  return ms;
}

/*
 * Each round: a fresh memfd of BYTES, every page written; preserved once
 * ("fresh": the kernel may first have to move pages it cannot pin for long),
 * unpreserved, preserved again ("repeat"), unpreserved, freed.
 */
static int preserve_large(int64_t bytes, int rounds) {
  int device = open_device();
  double *fresh = calloc(rounds, sizeof(double)), *repeat = calloc(rounds, sizeof(double));
  for (int r = 0; r < rounds; r++) {
    int fd = filled_memfd("luo-bench-large", bytes);
    fresh[r] = preserve_once_ms(device, fd);
    repeat[r] = preserve_once_ms(device, fd);
    close(fd);
  }
  close(device);
  printf("{\"bytes\":%lld,", (long long)bytes);
  print_rounds("fresh_ms", fresh, rounds);
  printf(",");
  print_rounds("repeat_ms", repeat, rounds);
  printf("}\n");
  return 0;
}

/*
 * preserve-fd FD: the large case's role swap. Preserves a memfd another
 * process wrote (inherited as FD) twice, like one round of preserve-large,
 * so that "who wrote the pages" and "who preserves them" can be told apart.
 */
static int preserve_inherited(int fd) {
  int device = open_device();
  double fresh = preserve_once_ms(device, fd);
  double repeat = preserve_once_ms(device, fd);
  close(device);
  printf("{\"fresh_ms\":[%.3f],\"repeat_ms\":[%.3f]}\n", fresh, repeat);
  return 0;
}

/*
 * blackout-agent SESSION N: what an agent does first in a new kernel, as C:
 * open the device, retrieve SESSION and its N files (tokens 1..N), finish.
 * Prints the instants of each step (CLOCK_MONOTONIC, ns), the same fields
 * the node agent (bench/blackout-agent.js) prints; C has nothing to load,
 * so its "required" instant is its start. Also its major page faults (pages
 * read from the disk) so far at those instants.
 */
static long major_faults(void) {
  struct rusage usage;
  return getrusage(RUSAGE_SELF, &usage) == 0 ? usage.ru_majflt : -1;
}

static int blackout_agent(const char *name, int n) {
  int64_t start = now_ns();
  long start_faults = major_faults();
  int device = open_device();
  int64_t opened = now_ns();
  int session = session_call(device, LU_IOC_RETRIEVE_SESSION, name);
  if (session < 0) { errno = -session; die("RETRIEVE_SESSION"); }
  int64_t retrieved_session = now_ns();
  int *fds = calloc(n, sizeof(int));
  for (int i = 0; i < n; i++)
    if ((fds[i] = retrieve_fd(session, (uint64_t)i + 1)) < 0) die("RETRIEVE_FD");
  int64_t done = now_ns();
  long done_faults = major_faults();
  if (finish_session(session) < 0) die("FINISH");
  for (int i = 0; i < n; i++) close(fds[i]);
  close(session);
  close(device);
  printf("{\"start_ns\":%lld,\"script_ns\":%lld,\"required_ns\":%lld,\"opened_ns\":%lld,\"session_ns\":%lld,\"done_ns\":%lld,\"retrieved\":%d,"
         "\"script_faults\":%ld,\"required_faults\":%ld,\"done_faults\":%ld}\n",
         (long long)start, (long long)start, (long long)start, (long long)opened, (long long)retrieved_session, (long long)done, n, start_faults, start_faults, done_faults);
  return 0;
}

/* The stage number (lu.stage=N) from /proc/cmdline, or 0. */
static int stage_from_cmdline(void) {
  char cmdline[4096] = {0};
  FILE *f = fopen("/proc/cmdline", "r");
  if (f == NULL) return 0;
  size_t len = fread(cmdline, 1, sizeof(cmdline) - 1, f);
  fclose(f);
  cmdline[len] = 0;
  const char *word = strstr(cmdline, STAGE_PARAM "=");
  return word == NULL ? 0 : atoi(word + strlen(STAGE_PARAM "="));
}

/* Runs argv as a child with stdout into `out`; its exit status, or -1. */
static int run_agent(char *const argv[], char **envp, const char *out) {
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) dup2(fd, 1);
    execve(argv[0], argv, envp);
    _exit(127);
  }
  int status = -1;
  if (pid > 0)
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  return status;
}

/*
 * As pid 1 (rdinit= on the kernel command line). In the stage where a side's
 * blackout session arrives, start that side's agent the way an init would
 * (fork and exec, stdout into AGENT_RESULT) and wait for it: the C agent
 * (this program, blackout-agent) in stage 3, the node agent in stage 4. The
 * instants around it go to INIT_RESULT. Then become /init (the node runner).
 * Nothing here may stop the boot: on any error it hands over all the same.
 */
static int init_main(char **argv, char **envp) {
  int64_t start = now_ns();
  mkdir("/dev", 0755);
  mkdir("/proc", 0755);
  int dev = mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, NULL) == 0;
  int proc = mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) == 0;
  /* node (the node agent's) may be on the system disk, which /init would mount too late */
  const char *disk = mount_system_disk();
  if (disk != NULL) fprintf(stderr, "luo_bench: %s: %s\n", disk, strerror(errno));
  int stage = stage_from_cmdline();
  char files[16];
  snprintf(files, sizeof(files), "%d", BLACKOUT_FILES);
  char *c_agent[] = {(char *)SELF, (char *)"blackout-agent", (char *)C_BLACKOUT_SESSION, files, NULL};
  char *node_agent[] = {(char *)NODE, (char *)NODE_AGENT, (char *)NODE_BLACKOUT_SESSION, files, NULL};
  char *const *agent = stage == C_STAGE ? c_agent : stage == NODE_STAGE ? node_agent : NULL;
  int64_t spawn = now_ns();
  int status = agent != NULL ? run_agent(agent, envp, AGENT_RESULT) : 0;
  int64_t exited = now_ns();
  if (proc) umount("/proc"); /* the node runner mounts its own */
  if (dev) umount("/dev");
  FILE *out = fopen(INIT_RESULT, "w");
  int64_t exec_at = now_ns();
  if (out != NULL) {
    fprintf(out, "{\"stage\":%d,\"agent\":\"%s\",\"start_ns\":%lld,\"spawn_ns\":%lld,\"agent_exit_ns\":%lld,\"agent_status\":%d,\"exec_ns\":%lld}\n",
            stage, agent == c_agent ? "c" : agent == node_agent ? "node" : "", (long long)start, (long long)spawn, (long long)exited, status, (long long)exec_at);
    fclose(out);
  }
  argv[0] = (char *)NEXT_INIT;
  execve(NEXT_INIT, argv, envp);
  die("execve " NEXT_INIT); /* pid 1 exits: the kernel panics and the run ends visibly */
  return 1;
}

/*
 * machine: what the guest can tell about itself, so that nothing is assumed:
 * the clock tick of /proc's CPU times (sysconf), and the hypervisor's CPUID
 * signature (leaf 0x40000000; QEMU answers "KVMKVMKVM" under KVM and
 * "TCGTCGTCGTCG" under software emulation).
 */
static int machine(void) {
  char signature[13] = {0};
#if defined(__x86_64__) || defined(__i386__)
  unsigned eax, ebx, ecx, edx;
  __cpuid(0x40000000, eax, ebx, ecx, edx);
  (void)eax;
  memcpy(signature, &ebx, 4);
  memcpy(signature + 4, &ecx, 4);
  memcpy(signature + 8, &edx, 4);
  for (int i = 0; i < 12; i++)
    if (signature[i] != 0 && (signature[i] < 0x20 || signature[i] > 0x7e || signature[i] == '"' || signature[i] == '\\')) signature[i] = '?';
#endif
  printf("{\"clock_tick\":%ld,\"hypervisor\":\"%s\"}\n", sysconf(_SC_CLK_TCK), signature);
  return 0;
}

static int usage(void) {
  fprintf(stderr,
          "usage: luo_bench serve-preserve N ROUNDS PREFIX CHUNK\n"
          "       luo_bench serve-retrieve N ROUNDS PREFIX CHUNK\n"
          "       luo_bench preserve-session NAME N\n"
          "       luo_bench preserve-fd FD\n"
          "       luo_bench preserve-large BYTES ROUNDS\n"
          "       luo_bench blackout-agent SESSION N\n"
          "       luo_bench machine\n");
  return 2;
}

int main(int argc, char **argv, char **envp) {
  if (getpid() == 1) return init_main(argv, envp);
  if (argc < 2) return usage();
  const char *mode = argv[1];
  if (strcmp(mode, "serve-preserve") == 0 && argc == 6) return serve_preserve(atoi(argv[2]), atoi(argv[3]), argv[4], atoi(argv[5]));
  if (strcmp(mode, "serve-retrieve") == 0 && argc == 6) return serve_retrieve(atoi(argv[2]), atoi(argv[3]), argv[4], atoi(argv[5]));
  if (strcmp(mode, "preserve-session") == 0 && argc == 4) return preserve_session(argv[2], atoi(argv[3]));
  if (strcmp(mode, "preserve-large") == 0 && argc == 4) return preserve_large(atoll(argv[2]), atoi(argv[3]));
  if (strcmp(mode, "preserve-fd") == 0 && argc == 3) return preserve_inherited(atoi(argv[2]));
  if (strcmp(mode, "machine") == 0 && argc == 2) return machine();
  if (strcmp(mode, "blackout-agent") == 0 && argc == 4) return blackout_agent(argv[2], atoi(argv[3]));
  return usage();
}
