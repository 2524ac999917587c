/* AVX-512BW parity kernel for CPUs with AVX-512 but no GFNI (Skylake-SP, Cascade Lake):
 * four 64-byte lanes per step; multiply-by-2 is an add plus
 * 0x1d XORed into the bytes whose top bit was set (a byte mask), constant multiplies
 * are two VPSHUFB nibble lookups; XORs of three operands are one VPTERNLOG.
 * The kernels themselves are parity_vec_tmpl.h. */
#include <immintrin.h>

#include "parity_avx512.h"
#include "parity_impl.h"

#define FR_T __attribute__((target("avx512f,avx512bw,avx512vl")))
#define FR_SUFFIX avx512bw
#define FR_MUL2(v) mul2(v)

static inline FR_T __m512i mul2(__m512i v)
{
    __mmask64 top = _mm512_movepi8_mask(v);
    return _mm512_xor_si512(_mm512_add_epi8(v, v),
                            _mm512_maskz_mov_epi8(top, _mm512_set1_epi8(0x1d)));
}

static inline FR_T __m512i tab(const uint8_t t[16])
{
    return _mm512_broadcast_i32x4(_mm_load_si128((const __m128i *)t));
}

#include "parity_vec_tmpl.h"

static int supported(void)
{
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
}

const struct fr_ops fr_ops_avx512bw = {"avx512bw", supported, xor_avx512bw, pq_avx512bw,
                                       rec_avx512bw};
