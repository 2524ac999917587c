/* AVX-512 + GFNI parity kernel: four 64-byte lanes per step; multiply-by-2 and constant
 * multiplies are each one GF2P8AFFINEQB with the constant's bit matrix (GF2P8MULB is no
 * use: it is hard-wired to the AES polynomial 0x11b, md uses 0x11d); XORs of three
 * operands are one VPTERNLOG. The kernels themselves are parity_vec_tmpl.h. */
#include <immintrin.h>

#include "parity_avx512.h"
#include "parity_impl.h"

#define FR_T __attribute__((target("avx512f,avx512bw,avx512vl,gfni")))
#define FR_SUFFIX avx512gfni
#define FR_REC_SPLIT
/* x * 2 is the affine map with m2's matrix, broadcast once per call and passed to horner. */
#define FR_MUL2_PARAM __m512i m2v,
#define FR_MUL2_ARG m2v,
#define FR_MUL2_SETUP(m2) __m512i m2v = _mm512_set1_epi64((long long)(m2)->aff);
#define FR_MUL2(v) mulm(v, m2v)
#define FR_MULC_DECL(m, g) __m512i m = _mm512_set1_epi64((long long)(g)->aff)
#define FR_MULC(v, m) mulm(v, m)

static inline FR_T __m512i mulm(__m512i v, __m512i m)
{
    return _mm512_gf2p8affine_epi64_epi8(v, m, 0);
}

#include "parity_vec_tmpl.h"

static int supported(void)
{
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("gfni");
}

const struct fr_ops fr_ops_avx512_gfni = {"avx512-gfni", supported, xor_avx512gfni,
                                          pq_avx512gfni, rec_avx512gfni};
