// luo-test-ctl - sets the faults of a /dev/luo_test file, in the test guest.
//
//   luo-test-ctl fail OP ERRNO   (OP: preserve, freeze, retrieve, can_finish; ERRNO 0 clears)
//   luo-test-ctl clear
//
// acts on fd 3, which the caller hands over (the file is the caller's open
// file, so a fault set here is the one LUO meets). Exit status 0 on success;
// otherwise the errno of the failed ioctl is printed on stderr ("errno 22").
// Static, so the guest needs no C library of its own.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "luo-test-handler/luo_test.h"

static const char *const op_names[LUO_TEST_NR_FAULT_OPS] = {
    [LUO_TEST_OP_PRESERVE] = "preserve",
    [LUO_TEST_OP_FREEZE] = "freeze",
    [LUO_TEST_OP_RETRIEVE] = "retrieve",
    [LUO_TEST_OP_CAN_FINISH] = "can_finish",
};

enum { CONTROLLED_FD = 3 };

static int usage(void) {
  fprintf(stderr, "usage: luo-test-ctl fail preserve|freeze|retrieve|can_finish ERRNO | clear\n");
  return 2;
}

static int op_of(const char *name) {
  for (int op = 0; op < LUO_TEST_NR_FAULT_OPS; op++)
    if (strcmp(name, op_names[op]) == 0) return op;
  return -1;
}

static int report(int rc) {
  if (rc == 0) return 0;
  fprintf(stderr, "errno %d\n", errno);
  return 1;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "clear") == 0)
    return report(ioctl(CONTROLLED_FD, LUO_TEST_CLEAR_FAULTS));
  if (argc != 4 || strcmp(argv[1], "fail") != 0) return usage();
  int op = op_of(argv[2]);
  char *end;
  long error = strtol(argv[3], &end, 10);
  if (op < 0 || *end != '\0' || error < 0 || error > 4095) return usage();
  struct luo_test_fault fault = {
      .size = sizeof(fault),
      .op = (__u32)op,
      .error = (__s32)error,
  };
  return report(ioctl(CONTROLLED_FD, LUO_TEST_SET_FAULT, &fault));
}
