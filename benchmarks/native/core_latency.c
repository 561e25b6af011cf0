/* One-way latency of a cache line between two CPUs: two threads, each pinned to one CPU, hand a counter back and
 * forth through one 64-byte-aligned atomic (each waits, spinning, for the other's value, then writes the next).
 * Half a round trip is what every hand-off between a thread pool's threads costs at least (an operator's output
 * written on one core and read on the other, a barrier's flag). Built and run by benchmarks/topology.py.
 *
 *   core_latency CPU_A CPU_B [ROUND_TRIPS]  ->  prints the one-way nanoseconds (the best of 5 batches)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static _Alignas(64) atomic_long flag;
static long trips;
static int cpu_b;

static int pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void *pong(void *unused) {
  (void)unused;
  int pinned = pin(cpu_b) == 0; /* play on regardless, so the other thread never waits forever; report after */
  for (long i = 0; i < 5 * trips; i++) {
    while (atomic_load_explicit(&flag, memory_order_acquire) != 2 * i + 1) {
    }
    atomic_store_explicit(&flag, 2 * i + 2, memory_order_release);
  }
  return pinned ? NULL : (void *)1;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s CPU_A CPU_B [ROUND_TRIPS]\n", argv[0]);
    return 2;
  }
  int cpu_a = atoi(argv[1]);
  cpu_b = atoi(argv[2]);
  trips = argc > 3 ? atol(argv[3]) : 100000;
  pthread_t t;
  if (pin(cpu_a) != 0 || pthread_create(&t, NULL, pong, NULL) != 0) {
    fprintf(stderr, "cannot pin to CPUs %d and %d\n", cpu_a, cpu_b);
    return 1;
  }
  double best = 1e30;
  for (int batch = 0; batch < 5; batch++) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = batch * trips; i < (batch + 1) * trips; i++) {
      atomic_store_explicit(&flag, 2 * i + 1, memory_order_release);
      while (atomic_load_explicit(&flag, memory_order_acquire) != 2 * i + 2) {
      }
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / trips / 2;
    if (ns < best) best = ns;
  }
  void *rc;
  pthread_join(t, &rc);
  if (rc != NULL) {
    fprintf(stderr, "cannot pin to CPU %d\n", cpu_b);
    return 1;
  }
  printf("%.1f\n", best);
  return 0;
}
