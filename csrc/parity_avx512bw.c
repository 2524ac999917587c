/* AVX-512BW parity kernel for CPUs with AVX-512 but no GFNI (Skylake-SP, Cascade Lake):
 * four 64-byte lanes per step; multiply-by-2 is an add plus
 * 0x1d XORed into the bytes whose top bit was set (a byte mask), constant multiplies
 * are two VPSHUFB nibble lookups; XORs of three operands are one VPTERNLOG. */
#include <immintrin.h>

#include "parity_impl.h"

#define T __attribute__((target("avx512f,avx512bw,avx512vl")))
#define W 4
#define STEP (W * 64)

static inline T __m512i ld(const uint8_t *p) { return _mm512_loadu_si512((const void *)p); }
static inline T void st(uint8_t *p, __m512i v) { _mm512_storeu_si512((void *)p, v); }
static inline T __m512i xor3(__m512i a, __m512i b, __m512i c)
{
    return _mm512_ternarylogic_epi64(a, b, c, 0x96);
}

static inline T __m512i mul2(__m512i v)
{
    __mmask64 top = _mm512_movepi8_mask(v);
    return _mm512_xor_si512(_mm512_add_epi8(v, v),
                            _mm512_maskz_mov_epi8(top, _mm512_set1_epi8(0x1d)));
}

static inline T __m512i mulc(__m512i v, __m512i lo, __m512i hi)
{
    __m512i m = _mm512_set1_epi8(0x0f);
    __m512i l = _mm512_and_si512(v, m);
    __m512i h = _mm512_and_si512(_mm512_srli_epi16(v, 4), m);
    return _mm512_xor_si512(_mm512_shuffle_epi8(lo, l), _mm512_shuffle_epi8(hi, h));
}

static inline T __m512i tab(const uint8_t t[16])
{
    return _mm512_broadcast_i32x4(_mm_load_si128((const __m128i *)t));
}

static T void xor_avx512bw(uint8_t *dst, const uint8_t *const *s, int n, size_t off,
                           size_t len)
{
    size_t main = len - len % STEP, end = off + main;
    for (size_t o = off; o < end; o += STEP) {
        __m512i x[W];
        int k = 0;
#pragma GCC unroll 4
        for (int w = 0; w < W; w++)
            x[w] = _mm512_setzero_si512();
        for (; k + 1 < n; k += 2)
#pragma GCC unroll 4
            for (int w = 0; w < W; w++)
                x[w] = xor3(x[w], ld(s[k] + o + 64 * w), ld(s[k + 1] + o + 64 * w));
        if (k < n)
#pragma GCC unroll 4
            for (int w = 0; w < W; w++)
                x[w] = _mm512_xor_si512(x[w], ld(s[k] + o + 64 * w));
#pragma GCC unroll 4
        for (int w = 0; w < W; w++)
            st(dst + o + 64 * w, x[w]);
    }
    fr_ops_portable.xor_(dst, s, n, end, len - main);
}

static inline T void horner(const uint8_t *const *s, int n, size_t o, __m512i p[W],
                            __m512i q[W])
{
#pragma GCC unroll 4
    for (int w = 0; w < W; w++)
        p[w] = q[w] = n > 0 ? ld(s[n - 1] + o + 64 * w) : _mm512_setzero_si512();
    for (int i = n - 2; i >= 0; i--) {
        if (s[i]) {
#pragma GCC unroll 4
            for (int w = 0; w < W; w++) {
                __m512i d = ld(s[i] + o + 64 * w);
                p[w] = _mm512_xor_si512(p[w], d);
                q[w] = _mm512_xor_si512(mul2(q[w]), d);
            }
        } else {
#pragma GCC unroll 4
            for (int w = 0; w < W; w++)
                q[w] = mul2(q[w]);
        }
    }
}

static T void pq_avx512bw(const uint8_t *const *s, int n, uint8_t *p, uint8_t *q,
                          const struct fr_gfc *m2, size_t off, size_t len)
{
    size_t main = len - len % STEP, end = off + main;
    for (size_t o = off; o < end; o += STEP) {
        __m512i pv[W], qv[W];
        horner(s, n, o, pv, qv);
#pragma GCC unroll 4
        for (int w = 0; w < W; w++) {
            if (p)
                st(p + o + 64 * w, pv[w]);
            if (q)
                st(q + o + 64 * w, qv[w]);
        }
    }
    fr_ops_portable.pq(s, n, p, q, m2, end, len - main);
}

static T void rec_avx512bw(const uint8_t *const *s, int n, const uint8_t *p, const uint8_t *q,
                           const struct fr_gfc *m2, const struct fr_gfc *a,
                           const struct fr_gfc *b, uint8_t *x, uint8_t *y, size_t off,
                           size_t len)
{
    size_t main = len - len % STEP, end = off + main;
    __m512i alo = tab(a->lo), ahi = tab(a->hi), blo = tab(b->lo), bhi = tab(b->hi);
    for (size_t o = off; o < end; o += STEP) {
        __m512i pv[W], qv[W];
        horner(s, n, o, pv, qv);
#pragma GCC unroll 4
        for (int w = 0; w < W; w++) {
            __m512i qxy = _mm512_xor_si512(qv[w], ld(q + o + 64 * w));
            __m512i dx = mulc(qxy, blo, bhi);
            if (p) {
                __m512i pxy = _mm512_xor_si512(pv[w], ld(p + o + 64 * w));
                dx = _mm512_xor_si512(dx, mulc(pxy, alo, ahi));
                st(y + o + 64 * w, _mm512_xor_si512(pxy, dx));
            }
            st(x + o + 64 * w, dx);
        }
    }
    fr_ops_portable.rec(s, n, p, q, m2, a, b, x, y, end, len - main);
}

static int supported(void)
{
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
}

const struct fr_ops fr_ops_avx512bw = {"avx512bw", supported, xor_avx512bw, pq_avx512bw,
                                       rec_avx512bw};
