/* SSSE3 parity kernel: four 16-byte lanes per step for instruction-level parallelism;
 * multiply-by-2 with compare/add/and (SSE2), constant multiplies with pshufb nibble tables. */
#include <immintrin.h>

#include "parity_impl.h"

#define T __attribute__((target("ssse3")))
#define W 4                      /* vectors per step */
#define STEP (W * 16)

static inline T __m128i ld(const uint8_t *p) { return _mm_loadu_si128((const __m128i *)p); }
static inline T void st(uint8_t *p, __m128i v) { _mm_storeu_si128((__m128i *)p, v); }

static inline T __m128i mul2(__m128i v)
{
    __m128i top = _mm_cmpgt_epi8(_mm_setzero_si128(), v); /* bytes with bit 7 set */
    return _mm_xor_si128(_mm_add_epi8(v, v), _mm_and_si128(top, _mm_set1_epi8(0x1d)));
}

static inline T __m128i mulc(__m128i v, __m128i lo, __m128i hi)
{
    __m128i m = _mm_set1_epi8(0x0f);
    __m128i l = _mm_and_si128(v, m);
    __m128i h = _mm_and_si128(_mm_srli_epi16(v, 4), m);
    return _mm_xor_si128(_mm_shuffle_epi8(lo, l), _mm_shuffle_epi8(hi, h));
}

static inline T __m128i tab(const uint8_t t[16])
{
    return _mm_load_si128((const __m128i *)t);
}

static T void xor_ssse3(uint8_t *dst, const uint8_t *const *s, int n, size_t off, size_t len)
{
    size_t main = len - len % STEP, end = off + main;
    for (size_t o = off; o < end; o += STEP) {
        __m128i x[W];
#pragma GCC unroll 4
        for (int w = 0; w < W; w++)
            x[w] = _mm_setzero_si128();
        for (int k = 0; k < n; k++)
#pragma GCC unroll 4
            for (int w = 0; w < W; w++)
                x[w] = _mm_xor_si128(x[w], ld(s[k] + o + 16 * w));
#pragma GCC unroll 4
        for (int w = 0; w < W; w++)
            st(dst + o + 16 * w, x[w]);
    }
    fr_ops_portable.xor_(dst, s, n, end, len - main);
}

/* P and Q of STEP bytes at offset o. */
static inline T void horner(const uint8_t *const *s, int n, size_t o, __m128i p[W], __m128i q[W])
{
#pragma GCC unroll 4
    for (int w = 0; w < W; w++)
        p[w] = q[w] = n > 0 ? ld(s[n - 1] + o + 16 * w) : _mm_setzero_si128();
    for (int i = n - 2; i >= 0; i--) {
#pragma GCC unroll 4
        for (int w = 0; w < W; w++)
            q[w] = mul2(q[w]);
        if (s[i]) {
#pragma GCC unroll 4
            for (int w = 0; w < W; w++) {
                __m128i d = ld(s[i] + o + 16 * w);
                p[w] = _mm_xor_si128(p[w], d);
                q[w] = _mm_xor_si128(q[w], d);
            }
        }
    }
}

static T void pq_ssse3(const uint8_t *const *s, int n, uint8_t *p, uint8_t *q,
                      const struct fr_gfc *m2, size_t off, size_t len)
{
    size_t main = len - len % STEP, end = off + main;
    for (size_t o = off; o < end; o += STEP) {
        __m128i pv[W], qv[W];
        horner(s, n, o, pv, qv);
#pragma GCC unroll 4
        for (int w = 0; w < W; w++) {
            if (p)
                st(p + o + 16 * w, pv[w]);
            if (q)
                st(q + o + 16 * w, qv[w]);
        }
    }
    fr_ops_portable.pq(s, n, p, q, m2, end, len - main);
}

static T void rec_ssse3(const uint8_t *const *s, int n, const uint8_t *p, const uint8_t *q,
                       const struct fr_gfc *m2, const struct fr_gfc *a, const struct fr_gfc *b,
                       uint8_t *x, uint8_t *y, size_t off, size_t len)
{
    size_t main = len - len % STEP, end = off + main;
    __m128i alo = tab(a->lo), ahi = tab(a->hi), blo = tab(b->lo), bhi = tab(b->hi);
    for (size_t o = off; o < end; o += STEP) {
        __m128i pv[W], qv[W];
        horner(s, n, o, pv, qv);
#pragma GCC unroll 4
        for (int w = 0; w < W; w++) {
            __m128i qxy = _mm_xor_si128(qv[w], ld(q + o + 16 * w));
            __m128i dx = mulc(qxy, blo, bhi);
            if (p) {
                __m128i pxy = _mm_xor_si128(pv[w], ld(p + o + 16 * w));
                dx = _mm_xor_si128(dx, mulc(pxy, alo, ahi));
                st(y + o + 16 * w, _mm_xor_si128(pxy, dx));
            }
            st(x + o + 16 * w, dx);
        }
    }
    fr_ops_portable.rec(s, n, p, q, m2, a, b, x, y, end, len - main);
}

static int supported(void) { return __builtin_cpu_supports("ssse3"); }

const struct fr_ops fr_ops_ssse3 = {"ssse3", supported, xor_ssse3, pq_ssse3, rec_ssse3};
