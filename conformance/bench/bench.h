/*
 * bench.h - what the benchmark's C programs share: the clock both sides
 * time with (CLOCK_MONOTONIC, like node's process.hrtime) and the way they
 * give up. Each program defines PROGRAM (its name, for messages) first.
 */
#pragma once

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void die(const char *what) {
  fprintf(stderr, PROGRAM ": %s: %s\n", what, strerror(errno));
  exit(1);
}
