/* AVX-512 + GFNI parity kernel: four 64-byte lanes per step; multiply-by-2 and constant
 * multiplies are each one GF2P8AFFINEQB with the constant's bit matrix (GF2P8MULB is no
 * use: it is hard-wired to the AES polynomial 0x11b, md uses 0x11d); XORs of three
 * operands are one VPTERNLOG. */
#include <immintrin.h>

#include "parity_impl.h"

#define T __attribute__((target("avx512f,avx512bw,avx512vl,gfni")))
#define W 4
#define STEP (W * 64)

static inline T __m512i ld(const uint8_t *p) { return _mm512_loadu_si512((const void *)p); }
static inline T void st(uint8_t *p, __m512i v) { _mm512_storeu_si512((void *)p, v); }
static inline T __m512i xor3(__m512i a, __m512i b, __m512i c)
{
    return _mm512_ternarylogic_epi64(a, b, c, 0x96);
}
static inline T __m512i mulm(__m512i v, __m512i m)
{
    return _mm512_gf2p8affine_epi64_epi8(v, m, 0);
}

static T void xor_avx512gfni(uint8_t *dst, const uint8_t *const *s, int n, size_t off,
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

static inline T void horner(const uint8_t *const *s, int n, size_t o, __m512i m2,
                            __m512i p[W], __m512i q[W])
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
                q[w] = _mm512_xor_si512(mulm(q[w], m2), d);
            }
        } else {
#pragma GCC unroll 4
            for (int w = 0; w < W; w++)
                q[w] = mulm(q[w], m2);
        }
    }
}

static T void pq_avx512gfni(const uint8_t *const *s, int n, uint8_t *p, uint8_t *q,
                            const struct fr_gfc *m2, size_t off, size_t len)
{
    size_t main = len - len % STEP, end = off + main;
    __m512i m = _mm512_set1_epi64((long long)m2->aff);
    for (size_t o = off; o < end; o += STEP) {
        __m512i pv[W], qv[W];
        horner(s, n, o, m, pv, qv);
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

static T void rec_avx512gfni(const uint8_t *const *s, int n, const uint8_t *p,
                             const uint8_t *q, const struct fr_gfc *m2,
                             const struct fr_gfc *a, const struct fr_gfc *b, uint8_t *x,
                             uint8_t *y, size_t off, size_t len)
{
    size_t main = len - len % STEP, end = off + main;
    __m512i m = _mm512_set1_epi64((long long)m2->aff);
    __m512i am = _mm512_set1_epi64((long long)a->aff), bm = _mm512_set1_epi64((long long)b->aff);
    for (size_t o = off; o < end; o += STEP) {
        __m512i pv[W], qv[W];
        horner(s, n, o, m, pv, qv);
#pragma GCC unroll 4
        for (int w = 0; w < W; w++) {
            __m512i qxy = _mm512_xor_si512(qv[w], ld(q + o + 64 * w));
            if (p) {
                __m512i pxy = _mm512_xor_si512(pv[w], ld(p + o + 64 * w));
                __m512i dx = _mm512_xor_si512(mulm(pxy, am), mulm(qxy, bm));
                st(x + o + 64 * w, dx);
                st(y + o + 64 * w, _mm512_xor_si512(pxy, dx));
            } else {
                st(x + o + 64 * w, mulm(qxy, bm));
            }
        }
    }
    fr_ops_portable.rec(s, n, p, q, m2, a, b, x, y, end, len - main);
}

static int supported(void)
{
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("gfni");
}

const struct fr_ops fr_ops_avx512_gfni = {"avx512-gfni", supported, xor_avx512gfni,
                                          pq_avx512gfni, rec_avx512gfni};
