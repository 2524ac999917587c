/* fuseraid parity kernel: md RAID6 arithmetic, GF(2^8) poly 0x11d, generator 2.
 * Everything after the stdint include is fed to cffi's cdef, so keep it to plain C
 * declarations and integer #defines (no other macros, no attributes). */
#include <stddef.h>
#include <stdint.h>
/* Name of the implementation calls dispatch to: "avx512-gfni", "avx512bw", "avx2",
 * "ssse3" or "portable". */
const char *fr_impl_name(void);
/* 1 if the implementation exists and this CPU can run it, else 0. */
int fr_impl_supported(const char *name);
/* Force an implementation; returns 0, or -1 (nothing changes) if unknown/unsupported. */
int fr_impl_select(const char *name);
/* The buffer functions return 0, or (writing nothing) one of these: */
#define FR_EOVERLAP_OUT -1 /* two outputs overlap */
#define FR_EOVERLAP_IN -2  /* an output partially overlaps an input (identical is fine) */
#define FR_EARG -3         /* bad block count or index */
/* dst = XOR of srcs[0..n-1], len bytes each. */
int fr_xor(uint8_t *dst, const uint8_t *const *srcs, int n, size_t len);
/* P = XOR, Q = sum 2^i * srcs[i]; NULL srcs are zero blocks; p or q may be NULL. */
int fr_gen_pq(const uint8_t *const *srcs, int n, uint8_t *p, uint8_t *q, size_t len);
/* Rebuild data blocks x != y (srcs[x], srcs[y] ignored) from the rest plus P and Q. */
int fr_rec_data_data(const uint8_t *const *srcs, int n, const uint8_t *p, const uint8_t *q,
                     int x, int y, uint8_t *out_x, uint8_t *out_y, size_t len);
/* Rebuild data block x (srcs[x] ignored) from the rest plus Q (P is lost too). */
int fr_rec_data_q(const uint8_t *const *srcs, int n, const uint8_t *q, int x,
                  uint8_t *out_x, size_t len);
/* out = c * src over GF(2^8), byte by byte. */
int fr_mul(uint8_t *out, const uint8_t *src, uint8_t c, size_t len);
/* Scalar field helpers (for callers that need coefficients). */
uint8_t fr_gf_mul(uint8_t a, uint8_t b);
uint8_t fr_gf_pow2(int e);
uint8_t fr_gf_inv(uint8_t a);
