/* AVX2 parity kernel: four 32-byte lanes per step for instruction-level parallelism;
 * multiply-by-2 with compare/add/and, constant multiplies with vpshufb nibble tables. */
#include <immintrin.h>

#include "parity_impl.h"

#define T __attribute__((target("avx2")))
#define W 4                      /* vectors per step */
#define STEP (W * 32)

static inline T __m256i ld(const uint8_t *p) { return _mm256_loadu_si256((const __m256i *)p); }
static inline T void st(uint8_t *p, __m256i v) { _mm256_storeu_si256((__m256i *)p, v); }

static inline T __m256i mul2(__m256i v)
{
    __m256i top = _mm256_cmpgt_epi8(_mm256_setzero_si256(), v); /* bytes with bit 7 set */
    return _mm256_xor_si256(_mm256_add_epi8(v, v), _mm256_and_si256(top, _mm256_set1_epi8(0x1d)));
}

static inline T __m256i mulc(__m256i v, __m256i lo, __m256i hi)
{
    __m256i m = _mm256_set1_epi8(0x0f);
    __m256i l = _mm256_and_si256(v, m);
    __m256i h = _mm256_and_si256(_mm256_srli_epi16(v, 4), m);
    return _mm256_xor_si256(_mm256_shuffle_epi8(lo, l), _mm256_shuffle_epi8(hi, h));
}

static inline T __m256i tab(const uint8_t t[16])
{
    return _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)t));
}

static T void xor_avx2(uint8_t *dst, const uint8_t *const *s, int n, size_t off, size_t len)
{
    size_t main = len - len % STEP, end = off + main;
    for (size_t o = off; o < end; o += STEP) {
        __m256i x[W];
#pragma GCC unroll 4
        for (int w = 0; w < W; w++)
            x[w] = _mm256_setzero_si256();
        for (int k = 0; k < n; k++)
#pragma GCC unroll 4
            for (int w = 0; w < W; w++)
                x[w] = _mm256_xor_si256(x[w], ld(s[k] + o + 32 * w));
#pragma GCC unroll 4
        for (int w = 0; w < W; w++)
            st(dst + o + 32 * w, x[w]);
    }
    fr_ops_portable.xor_(dst, s, n, end, len - main);
}

/* P and Q of STEP bytes at offset o. */
static inline T void horner(const uint8_t *const *s, int n, size_t o, __m256i p[W], __m256i q[W])
{
#pragma GCC unroll 4
    for (int w = 0; w < W; w++)
        p[w] = q[w] = n > 0 ? ld(s[n - 1] + o + 32 * w) : _mm256_setzero_si256();
    for (int i = n - 2; i >= 0; i--) {
#pragma GCC unroll 4
        for (int w = 0; w < W; w++)
            q[w] = mul2(q[w]);
        if (s[i]) {
#pragma GCC unroll 4
            for (int w = 0; w < W; w++) {
                __m256i d = ld(s[i] + o + 32 * w);
                p[w] = _mm256_xor_si256(p[w], d);
                q[w] = _mm256_xor_si256(q[w], d);
            }
        }
    }
}

static T void pq_avx2(const uint8_t *const *s, int n, uint8_t *p, uint8_t *q,
                      const struct fr_gfc *m2, size_t off, size_t len)
{
    size_t main = len - len % STEP, end = off + main;
    for (size_t o = off; o < end; o += STEP) {
        __m256i pv[W], qv[W];
        horner(s, n, o, pv, qv);
#pragma GCC unroll 4
        for (int w = 0; w < W; w++) {
            if (p)
                st(p + o + 32 * w, pv[w]);
            if (q)
                st(q + o + 32 * w, qv[w]);
        }
    }
    fr_ops_portable.pq(s, n, p, q, m2, end, len - main);
}

static T void rec_avx2(const uint8_t *const *s, int n, const uint8_t *p, const uint8_t *q,
                       const struct fr_gfc *m2, const struct fr_gfc *a, const struct fr_gfc *b,
                       uint8_t *x, uint8_t *y, size_t off, size_t len)
{
    size_t main = len - len % STEP, end = off + main;
    __m256i alo = tab(a->lo), ahi = tab(a->hi), blo = tab(b->lo), bhi = tab(b->hi);
    for (size_t o = off; o < end; o += STEP) {
        __m256i pv[W], qv[W];
        horner(s, n, o, pv, qv);
#pragma GCC unroll 4
        for (int w = 0; w < W; w++) {
            __m256i qxy = _mm256_xor_si256(qv[w], ld(q + o + 32 * w));
            __m256i dx = mulc(qxy, blo, bhi);
            if (p) {
                __m256i pxy = _mm256_xor_si256(pv[w], ld(p + o + 32 * w));
                dx = _mm256_xor_si256(dx, mulc(pxy, alo, ahi));
                st(y + o + 32 * w, _mm256_xor_si256(pxy, dx));
            }
            st(x + o + 32 * w, dx);
        }
    }
    fr_ops_portable.rec(s, n, p, q, m2, a, b, x, y, end, len - main);
}

static int supported(void) { return __builtin_cpu_supports("avx2"); }

const struct fr_ops fr_ops_avx2 = {"avx2", supported, xor_avx2, pq_avx2, rec_avx2};
