/* AVX2 parity kernel: four 32-byte lanes per step for instruction-level parallelism;
 * multiply-by-2 with compare/add/and, constant multiplies with vpshufb nibble tables.
 * The kernels themselves are parity_vec_tmpl.h. */
#include <immintrin.h>

#include "parity_impl.h"

#define FR_T __attribute__((target("avx2")))
#define FR_SUFFIX avx2
#define FR_V __m256i
#define FR_VB 32
#define FR_MM(op) _mm256_##op
#define FR_SI(op) _mm256_##op##_si256

static inline FR_T __m256i tab(const uint8_t t[16])
{
    return _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)t));
}

#include "parity_vec_tmpl.h"

static int supported(void) { return __builtin_cpu_supports("avx2"); }

const struct fr_ops fr_ops_avx2 = {"avx2", supported, xor_avx2, pq_avx2, rec_avx2};
