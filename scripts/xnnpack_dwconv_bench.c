/* Time one XNNPACK int8 25-tap depthwise microkernel built three ways (GCC, GCC with pressure-aware scheduling,
   clang), interleaved, on NASNet-Mobile's shapes: built and run by scripts/xnnpack_kernel_spills.sh.
   CT (channel tile of the kernel: 32 for avx512skx, 16 for avx2) is given with -DCT=. */
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include "src/xnnpack/microparams.h"
typedef void (*kfn)(size_t, size_t, const int8_t**, const void*, int8_t*, intptr_t, size_t, size_t, size_t,
                    const int8_t*, const union xnn_qs8_qc8w_conv_minmax_params*);
void k_gcc(size_t, size_t, const int8_t**, const void*, int8_t*, intptr_t, size_t, size_t, size_t, const int8_t*, const union xnn_qs8_qc8w_conv_minmax_params*);
void k_gccs(size_t, size_t, const int8_t**, const void*, int8_t*, intptr_t, size_t, size_t, size_t, const int8_t*, const union xnn_qs8_qc8w_conv_minmax_params*);
void k_clang(size_t, size_t, const int8_t**, const void*, int8_t*, intptr_t, size_t, size_t, size_t, const int8_t*, const union xnn_qs8_qc8w_conv_minmax_params*);
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static int cmp(const void* a, const void* b) { double x = *(double*)a, y = *(double*)b; return x < y ? -1 : x > y; }
int main(int argc, char** argv) {
  size_t C = atoi(argv[1]), W = atoi(argv[2]);  /* channels, output pixels per call (a row of the map) */
  size_t groups = (C + CT - 1) / CT, wsize = groups * (CT * 4 + 25 * CT + CT * 4);
  int8_t* w = aligned_alloc(64, wsize + 64); for (size_t i = 0; i < wsize; i++) w[i] = (int8_t)(rand() % 7 - 3);
  for (size_t g = 0; g < groups; g++) { float* s = (float*)(w + g * (CT*4 + 25*CT + CT*4) + CT*4 + 25*CT); for (int i = 0; i < CT; i++) s[i] = 0.01f; }
  size_t H = W + 4; int8_t* in = aligned_alloc(64, (H * H * C + 64)); for (size_t i = 0; i < H * H * C; i++) in[i] = (int8_t)(rand() % 255 - 127);
  const int8_t** ptrs = malloc(sizeof(void*) * 25 * W);
  for (size_t x = 0; x < W; x++) for (int ky = 0; ky < 5; ky++) for (int kx = 0; kx < 5; kx++)
    ptrs[x * 25 + ky * 5 + kx] = in + ((ky) * H + x + kx) * C;
  int8_t* out = aligned_alloc(64, W * C + 64); int8_t zero[4096] = {0};
  union xnn_qs8_qc8w_conv_minmax_params p; memset(&p, 0, sizeof p);
  p.fp32_scalar.output_zero_point = 0; p.fp32_scalar.output_min = -128; p.fp32_scalar.output_max = 127;
  kfn ks[3] = {k_gcc, k_gccs, k_clang}; const char* names[3] = {"gcc -O2", "gcc -O2 -fschedule-insns -fsched-pressure", "clang-19 -O2"};
  enum { R = 41, N = 2000 }; double t[3][R];
  static int8_t ref[3][1 << 16];
  for (int k = 0; k < 3; k++) { ks[k](C, W, ptrs, w, out, 25 * sizeof(void*), 0, 0, 0, zero, &p); memcpy(ref[k], out, W * C); }
  for (int r = 0; r < R; r++) for (int k = 0; k < 3; k++) {
    double t0 = now(); for (int n = 0; n < N; n++) ks[k](C, W, ptrs, w, out, 25 * sizeof(void*), 0, 0, 0, zero, &p);
    t[k][r] = (now() - t0) / N * 1e6; }
  for (int k = 0; k < 3; k++) { qsort(t[k], R, sizeof(double), cmp); }
  printf("channels %zu, %zu output pixels per call; outputs identical: %s\n\n| build | median per call | x of clang |\n|---|---|---|\n", C, W,
         (!memcmp(ref[0], ref[1], W * C) && !memcmp(ref[0], ref[2], W * C)) ? "yes" : "NO");
  for (int k = 0; k < 3; k++) printf("| %s | %.3f us | %.2fx of clang |\n", names[k], t[k][R/2], t[k][R/2] / t[2][R/2]);
  return 0;
}
