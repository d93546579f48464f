// luo-raw-ioctl - issues one LUO ioctl exactly as given, for the conformance
// suite's abi/* cases: the kernel's own refusals, which the library never
// lets through (it refuses bad names and sizes before any syscall).
//
//   luo-raw-ioctl device REQUEST HEX          on /dev/liveupdate
//   luo-raw-ioctl session REQUEST HEX         on a new outgoing session
//   luo-raw-ioctl incoming:NAME REQUEST HEX   on the incoming session NAME
//
// REQUEST is the ioctl number (decimal, or hex with 0x). HEX is the argument
// bytes, or "badptr" for an address where nothing can be read. Prints one
// line, "RC ERRNO HEX": the ioctl's return value, its errno (0 when it
// succeeded) and the argument bytes after the call. Exit status 0 once the
// ioctl was issued; 1 (with why on stderr) when the setup failed.
// Static, so the guest needs no C library of its own.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "liveupdate/abi.h"

static int fail(const char *what) {
  fprintf(stderr, "luo-raw-ioctl: %s: %s\n", what, strerror(errno));
  return -1;
}

/* The fd the ioctl goes to, per TARGET; -1 after saying why. */
static int target_fd(const char *target) {
  int device = open(LU_DEVICE_PATH, O_RDWR | O_CLOEXEC);
  if (device < 0) return fail("open " LU_DEVICE_PATH);
  if (strcmp(target, "device") == 0) return device;
  struct lu_session_args args = {.size = sizeof(args), .fd = -1};
  unsigned long request;
  if (strcmp(target, "session") == 0) {
    snprintf((char *)args.name, sizeof(args.name), "conf-abi-raw-%d", (int)getpid());
    request = LU_IOC_CREATE_SESSION;
  } else if (strncmp(target, "incoming:", 9) == 0 && strlen(target + 9) < sizeof(args.name)) {
    strcpy((char *)args.name, target + 9);
    request = LU_IOC_RETRIEVE_SESSION;
  } else {
    errno = EINVAL;
    return fail(target);
  }
  if (ioctl(device, request, &args) < 0) return fail(target);
  return args.fd;
}

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* The argument bytes of HEX (lower case), in a buffer of exactly their length. */
static unsigned char *parse_hex(const char *hex, size_t *length) {
  size_t digits = strlen(hex);
  if (digits % 2 != 0) return NULL;
  *length = digits / 2;
  unsigned char *bytes = malloc(*length ? *length : 1);
  for (size_t i = 0; bytes != NULL && i < *length; i++) {
    int high = hex_value(hex[2 * i]), low = hex_value(hex[2 * i + 1]);
    if (high < 0 || low < 0) {
      free(bytes);
      return NULL;
    }
    bytes[i] = (unsigned char)(high << 4 | low);
  }
  return bytes;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: luo-raw-ioctl device|session|incoming:NAME REQUEST HEX|badptr\n");
    return 2;
  }
  char *end;
  unsigned long request = strtoul(argv[2], &end, 0);
  if (*end != '\0') {
    fprintf(stderr, "luo-raw-ioctl: bad REQUEST %s\n", argv[2]);
    return 2;
  }
  size_t length = 0;
  unsigned char *bytes = NULL;
  void *arg;
  if (strcmp(argv[3], "badptr") == 0) {
    // A page that can be neither read nor written: the kernel's copy faults.
    arg = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (arg == MAP_FAILED) {
      fail("mmap");
      return 1;
    }
  } else {
    arg = bytes = parse_hex(argv[3], &length);
    if (bytes == NULL) {
      fprintf(stderr, "luo-raw-ioctl: bad HEX %s\n", argv[3]);
      return 2;
    }
  }
  int fd = target_fd(argv[1]);
  if (fd < 0) return 1;
  int rc = ioctl(fd, request, arg);
  printf("%d %d ", rc, rc < 0 ? errno : 0);
  for (size_t i = 0; i < length; i++) printf("%02x", bytes[i]);
  printf("\n");
  return 0;
}
