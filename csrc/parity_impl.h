/* Internal contract between the dispatcher (parity.c) and the per-ISA kernels.
 *
 * Every kernel works on the byte range [off, off + len) of all its buffers and reads
 * every input at a position before writing any output at that position, so an output
 * may be the very same buffer as an input (never a shifted overlap). Vector kernels do
 * the whole-vector part and hand the tail to the portable kernel. */
#ifndef FR_PARITY_IMPL_H
#define FR_PARITY_IMPL_H
#include <stddef.h>
#include <stdint.h>

/* Multiply-by-constant c in every form a kernel might want. */
struct fr_gfc {
    uint8_t lo[16] __attribute__((aligned(16))); /* c * k for low nibbles */
    uint8_t hi[16] __attribute__((aligned(16))); /* c * (k << 4) for high nibbles */
    uint64_t aff;                  /* GF2P8AFFINEQB matrix of x -> c * x */
};

/* srcs[n - 1] is non-NULL when n > 0 (the dispatcher trims trailing zero blocks);
 * other entries may be NULL (zero blocks). */
typedef void (*fr_xor_fn)(uint8_t *dst, const uint8_t *const *s, int n, size_t off,
                          size_t len);
typedef void (*fr_pq_fn)(const uint8_t *const *s, int n, uint8_t *p, uint8_t *q,
                         const struct fr_gfc *m2, size_t off, size_t len);
/* With p != NULL: pxy = p ^ P(s), qxy = q ^ Q(s), x = a*pxy ^ b*qxy, y = pxy ^ x.
 * With p == NULL: x = b * (q ^ Q(s)) and y is untouched. */
typedef void (*fr_rec_fn)(const uint8_t *const *s, int n, const uint8_t *p, const uint8_t *q,
                          const struct fr_gfc *m2, const struct fr_gfc *a,
                          const struct fr_gfc *b, uint8_t *x, uint8_t *y, size_t off,
                          size_t len);

struct fr_ops {
    const char *name;
    int (*supported)(void);
    fr_xor_fn xor_;
    fr_pq_fn pq;
    fr_rec_fn rec;
};

extern const struct fr_ops fr_ops_portable;
extern const struct fr_ops fr_ops_avx2;
extern const struct fr_ops fr_ops_ssse3;
extern const struct fr_ops fr_ops_avx512_gfni;
extern const struct fr_ops fr_ops_avx512bw;

#endif
