/* SSSE3 parity kernel: four 16-byte lanes per step for instruction-level parallelism;
 * multiply-by-2 with compare/add/and (SSE2), constant multiplies with pshufb nibble tables.
 * The kernels themselves are parity_vec_tmpl.h. */
#include <immintrin.h>

#include "parity_impl.h"

#define FR_T __attribute__((target("ssse3")))
#define FR_SUFFIX ssse3
#define FR_V __m128i
#define FR_VB 16
#define FR_MM(op) _mm_##op
#define FR_SI(op) _mm_##op##_si128

static inline FR_T __m128i tab(const uint8_t t[16]) { return _mm_load_si128((const __m128i *)t); }

#include "parity_vec_tmpl.h"

static int supported(void) { return __builtin_cpu_supports("ssse3"); }

const struct fr_ops fr_ops_ssse3 = {"ssse3", supported, xor_ssse3, pq_ssse3, rec_ssse3};
